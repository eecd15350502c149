//! Runs every case under `ui-tests/fail` (each must fail to compile with the
//! pinned `.stderr`) and `ui-tests/pass` (each must compile and run).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
    t.pass("pass/*.rs");
}
