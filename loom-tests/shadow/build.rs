//! Selects loom's synchronisation primitives in dmacap's source.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(dmacap_loom)");
    println!("cargo::rustc-cfg=dmacap_loom");
}
