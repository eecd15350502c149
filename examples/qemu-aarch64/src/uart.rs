//! The PL011 UART of QEMU `virt` at 0x0900_0000, transmit only. QEMU needs
//! no setup; the program polls the FIFO-full flag and writes the data
//! register.

use core::fmt;

const BASE: usize = 0x0900_0000;
const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// The UART, as a `fmt::Write`.
pub struct Uart;

impl Uart {
    fn put(b: u8) {
        // SAFETY: BASE is the PL011 of QEMU `virt`, mapped as device memory
        // by the identity map; FR and DR are its 32-bit registers, and
        // reading FR / writing DR has no effect beyond the UART.
        unsafe {
            while core::ptr::read_volatile((BASE + FR) as *const u32) & FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            core::ptr::write_volatile((BASE + DR) as *mut u32, u32::from(b));
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::put(b'\r');
            }
            Self::put(b);
        }
        Ok(())
    }
}

/// Prints to the UART.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use ::core::fmt::Write as _;
        let _ = ::core::write!($crate::uart::Uart, $($arg)*);
    }};
}

/// Prints a line to the UART.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use ::core::fmt::Write as _;
        let _ = ::core::writeln!($crate::uart::Uart, $($arg)*);
    }};
}
