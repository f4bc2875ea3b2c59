//! The AMX tile configuration shared by the int8 and bf16 kernels: every tile 16 rows of 64
//! bytes. Tiles 0-3 hold the sums of a 32 x 32 block, 4-5 two 16-row slices of the left
//! operand, 6-7 two 16-column slices of the right one.

use std::arch::asm;

/// The tile configuration (palette 1).
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (little-endian u16)
        c[48 + t] = 16; // rows
        t += 1;
    }
    Config(c)
};

/// This thread's tiles configured; released on drop.
pub(crate) struct Tiles(());

impl Tiles {
    /// Loads the tile configuration on this thread. The caller checked
    /// [`crate::isa::amx_ready`] or [`crate::isa::amx_bf16_ready`].
    pub(crate) fn configure() -> Self {
        // SAFETY: AMX is enabled for this process (the caller checked); CONFIG is a valid palette-1
        // configuration, 64 bytes, aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
        Self(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured on this thread by `configure`.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
