//! The source tree has the design's layers, and no module imports from a
//! layer above its own.
//!
//! ```text
//! api/      the typed API: handle, device, batch, sg, mmio, virtio (top)
//! backend/  the Backend trait, composition, direct, non-coherent, IOMMU, bounce
//! arch/     cache maintenance instructions
//! base/     addresses, directions, buffers, platform hook, device context, errors
//! sim/      the simulated platform, apart: it may use every layer, none uses it
//! ```
//!
//! Every `crate::…` path in non-test code of `src/` is checked: its target
//! layer must be at or below the file's own. Test modules (`#[cfg(test)]`
//! to the end of a file, and test-only files) may reach up, as tests do.

use std::fs;
use std::path::{Path, PathBuf};

/// Layers, bottom to top; `Sim` stands apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Base,
    Arch,
    Backend,
    Api,
    Sim,
}

/// The layer a source file belongs to, from its folder.
fn layer_of_file(path: &Path) -> Option<Layer> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(match first {
        "api" => Layer::Api,
        "backend" => Layer::Backend,
        "arch" => Layer::Arch,
        "base" | "sync.rs" => Layer::Base,
        "sim" => Layer::Sim,
        _ => return None, // lib.rs: the root re-exports everything
    })
}

/// The layer a `crate::name` path leads to: the module, or the item the
/// crate root re-exports under that name.
fn layer_of_path(name: &str) -> Layer {
    match name {
        "api" | "handle" | "device" | "batch" | "sg" | "mmio" | "virtio" | "Device" | "Mapped"
        | "MmioMapped" => Layer::Api,
        "backend" => Layer::Backend,
        "arch" => Layer::Arch,
        "sim" => Layer::Sim,
        // base, its modules, `sync`, and the root re-exports of base items
        _ => Layer::Base,
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test code of a file, without comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let end = text
        .lines()
        .position(|l| {
            let l = l.trim();
            l == "#[cfg(test)]" || l.starts_with("#[cfg(all(test")
        })
        .unwrap_or(usize::MAX);
    text.lines()
        .enumerate()
        .take(end)
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

#[test]
#[cfg_attr(miri, ignore = "reads source files; checks no memory safety")]
fn no_import_runs_from_a_lower_layer_to_a_higher_one() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(own) = layer_of_file(file) else {
            continue;
        };
        let name = file.file_name().unwrap().to_str().unwrap();
        if own == Layer::Sim || name == "tests.rs" || name == "testhw.rs" {
            continue;
        }
        let text = fs::read_to_string(file).unwrap();
        for (line, code) in code_lines(&text) {
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let target: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                checked += 1;
                let to = layer_of_path(&target);
                if to > own {
                    violations.push(format!(
                        "{}:{line}: {own:?} imports crate::{target} ({to:?})",
                        file.strip_prefix(src()).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(checked > 100, "the check found only {checked} paths");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
#[cfg_attr(miri, ignore = "reads source files; checks no memory safety")]
fn the_folders_are_the_layers() {
    for dir in [
        "api",
        "backend",
        "backend/iommu",
        "backend/bounce",
        "arch",
        "base",
        "sim",
    ] {
        assert!(src().join(dir).is_dir(), "src/{dir} is missing");
    }
    for stray in ["handle.rs", "device.rs", "iommu", "bounce", "buffer.rs"] {
        assert!(
            !src().join(stray).exists(),
            "src/{stray} is outside its layer"
        );
    }
}
