//! Entry point and exception vectors.
//!
//! QEMU `virt` without firmware loads the ELF and enters `_start` at EL1
//! with the MMU and caches off. `_start` loads the identity map of
//! [`crate::mmu`], turns on the MMU, the data and instruction caches and
//! FP/SIMD (Rust's `aarch64-unknown-none` code uses SIMD registers), zeroes
//! `.bss`, sets the stack and calls [`crate::main`]. Until the MMU is on,
//! data accesses are Device-nGnRnE, which is why nothing before it is
//! written in Rust.

use core::arch::global_asm;

global_asm!(
    r#"
.section .text.boot, "ax"
.global _start
_start:
    // The identity map: MAIR, TCR, and the L1 table; L1[1] points at the
    // L2 table of the RAM gigabyte (an address `const` Rust cannot hold).
    ldr     x0, ={mair}
    msr     mair_el1, x0
    ldr     x0, ={tcr}
    msr     tcr_el1, x0
    adrp    x0, {l1}
    add     x0, x0, :lo12:{l1}
    adrp    x1, {l2}
    add     x1, x1, :lo12:{l2}
    orr     x1, x1, #3
    str     x1, [x0, #8]
    dsb     sy
    msr     ttbr0_el1, x0
    tlbi    vmalle1
    dsb     nsh
    isb
    // FP/SIMD on at EL1 and EL0 (CPACR_EL1.FPEN = 0b11).
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    // MMU, data cache, instruction cache on; alignment checks off.
    mrs     x0, sctlr_el1
    orr     x0, x0, #(1 << 0)
    orr     x0, x0, #(1 << 2)
    orr     x0, x0, #(1 << 12)
    bic     x0, x0, #(1 << 1)
    msr     sctlr_el1, x0
    isb
    // Exception vectors.
    adrp    x0, qemu_aarch64_vectors
    add     x0, x0, :lo12:qemu_aarch64_vectors
    msr     vbar_el1, x0
    isb
    // Zero .bss (cacheable now).
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:  adrp    x0, __stack_top
    add     x0, x0, :lo12:__stack_top
    mov     sp, x0
    bl      {main}
3:  wfe
    b       3b

// Sixteen entries of 0x80 bytes: each passes its index to `exception`,
// which reports and exits (nothing here returns).
.section .text.vectors, "ax"
.balign 2048
qemu_aarch64_vectors:
    .set idx, 0
    .rept 16
    .balign 128
    mov     x0, #idx
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    b       {exception}
    .set idx, idx + 1
    .endr
"#,
    mair = const crate::mmu::MAIR,
    tcr = const crate::mmu::TCR,
    l1 = sym crate::mmu::L1,
    l2 = sym crate::mmu::L2,
    main = sym crate::main,
    exception = sym exception,
);

/// Every exception is fatal here: report it and exit with status 3.
extern "C" fn exception(index: u64, esr: u64, elr: u64, far: u64) -> ! {
    crate::println!(
        "qemu-aarch64: exception {index} (vector {}): ESR_EL1={esr:#x} (EC {:#x}) ELR_EL1={elr:#x} FAR_EL1={far:#x}",
        ["sync", "irq", "fiq", "serror"][(index % 4) as usize],
        esr >> 26
    );
    crate::semihost::exit(3)
}
