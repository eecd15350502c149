//! Semihosting (QEMU runs with `-semihosting-config enable=on`): the
//! command line (`-append`, which picks the configuration) and the exit
//! with a status (`SYS_EXIT`, whose subcode QEMU returns as its exit
//! status). PSCI `SYSTEM_OFF` over HVC (QEMU's built-in PSCI without
//! firmware) is the fallback exit, with status 0 — so `run.sh` also
//! requires the summary line.

use core::arch::asm;

const SYS_GET_CMDLINE: u64 = 0x15;
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: the subcode is the exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
/// PSCI 0.2 `SYSTEM_OFF`.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

/// The command line QEMU was given with `-append`, in `buf`; empty if
/// semihosting cannot give it.
pub fn cmdline(buf: &mut [u8]) -> &str {
    let mut block = [buf.as_mut_ptr() as u64, buf.len() as u64];
    let ret: u64;
    // SAFETY: SYS_GET_CMDLINE writes at most `block[1]` bytes into `buf`
    // and the length into `block[1]`; both live across the call.
    unsafe {
        asm!("hlt #0xf000", inout("x0") SYS_GET_CMDLINE => ret, in("x1") block.as_mut_ptr(), options(nostack));
    }
    let len = if ret == 0 {
        (block[1] as usize).min(buf.len())
    } else {
        0
    };
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Ends the program: QEMU exits with `status`.
pub fn exit(status: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    // SAFETY: the semihosting call reads the two-word block, which lives
    // across the call; with semihosting on QEMU exits and never returns.
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
