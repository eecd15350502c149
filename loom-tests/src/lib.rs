//! Holds no code: the models are in `tests/`.
