//! Leaving QEMU with a status: semihosting `SYS_EXIT` (QEMU runs with
//! `-semihosting`; its exit status is the subcode), and PSCI `SYSTEM_OFF`
//! over HVC (QEMU's built-in PSCI without firmware) as the fallback, which
//! exits with status 0 — so `run.sh` also requires the summary line.

use core::arch::asm;

/// Semihosting `SYS_EXIT`.
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: the subcode is the exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
/// PSCI 0.2 `SYSTEM_OFF`.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

/// Ends the program: QEMU exits with `status`.
pub fn exit(status: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    // SAFETY: the semihosting call reads the two-word block, which lives
    // across the call; with `-semihosting` QEMU exits and never returns.
    unsafe {
        asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    // SAFETY: PSCI SYSTEM_OFF through QEMU's HVC conduit powers the machine
    // off; it touches no memory of the program.
    unsafe {
        asm!("hvc #0", inout("x0") PSCI_SYSTEM_OFF => _, options(nomem, nostack));
    }
    loop {
        // SAFETY: waits for an event; no memory access.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}
