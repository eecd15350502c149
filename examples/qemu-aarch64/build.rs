//! Links with `link.ld` (QEMU virt: RAM at 0x4000_0000, the image at 0x4008_0000).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg=-T{dir}/link.ld");
    println!("cargo:rerun-if-changed=link.ld");
}
