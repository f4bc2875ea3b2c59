//! The ONNX messages, generated at build time from the official `onnx.proto` (ONNX 1.23.2).

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
