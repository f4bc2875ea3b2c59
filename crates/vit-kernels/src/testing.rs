//! Tests that run on every device the build enables: a helper for the tests of this crate and of
//! the crates above it, and for users who test their own modules on every device.

/// Generates, for each function, a module of tests: `cpu` always, `cuda` when the calling crate
/// is built with its `cuda` feature, `metal` with its `metal` feature. The same test body then
/// proves the CPU kernels and the GPU fallbacks alike.
///
/// ```
/// use candle_core::Device;
///
/// vit_kernels::device_tests! {
///     fn softmax_rows_sum_to_one(device: &Device) {
///         let x = candle_core::Tensor::new(&[[1f32, 2., 3.]], device).unwrap();
///         let y = vit_kernels::softmax_last_dim(&x).unwrap();
///         let sum: f32 = y.sum_all().unwrap().to_scalar().unwrap();
///         assert!((sum - 1.0).abs() < 1e-6);
///     }
/// }
/// # softmax_rows_sum_to_one::run(&Device::Cpu);
/// ```
#[macro_export]
macro_rules! device_tests {
    ($(fn $name:ident($device:ident: &Device) $body:block)*) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                pub fn run($device: &::candle_core::Device) $body

                #[test]
                fn cpu() {
                    run(&::candle_core::Device::Cpu)
                }

                #[cfg(feature = "cuda")]
                #[test]
                fn cuda() {
                    run(&::candle_core::Device::new_cuda(0).expect("the cuda feature is on but no CUDA device opens"))
                }

                #[cfg(feature = "metal")]
                #[test]
                fn metal() {
                    run(&::candle_core::Device::new_metal(0).expect("the metal feature is on but no Metal device opens"))
                }
            }
        )*
    };
}
