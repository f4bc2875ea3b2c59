//! int8 dense layers in standard ONNX operators, the scheme of `vit`'s `--precision int8`
//! (`vit_kernels::int8`): weights symmetric per output channel, `w_q = round(w / s_c)` in
//! `[-127, 127]` with `s_c = max |W[c, :]| / 127`; each activation row (token) asymmetric at
//! run time, `x_q = round(x / s_r) + z_r` in `[0, 255]` over its range widened to hold 0;
//! `y = s_r s_c (sum x_q w_q - z_r sum_k w_q) + b`, the integer part exact in int32
//! (`MatMulInteger`).
//!
//! ONNX's own dynamic quantization (`DynamicQuantizeLinear`) takes one scale for a whole
//! tensor; a scale per token is what keeps int8 within a fraction of a point of float32 here,
//! so the per-row scales are computed with `ReduceMin`/`ReduceMax`. The one difference from
//! `vit`'s kernels: ONNX's `Round` takes ties to even, the kernels away from zero.

use crate::graph::{Attr, GraphBuilder};

/// A dense weight quantized per output channel, stored `[in, out]` (the layout `MatMulInteger`
/// multiplies by), with its scales and column sums.
pub(crate) struct QuantizedWeight {
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
    /// `[in, out]` signed bytes.
    pub(crate) values: Vec<i8>,
    /// `s_c` per output channel.
    pub(crate) scales: Vec<f32>,
    /// `sum_k w_q[c, k]` per output channel.
    pub(crate) column_sums: Vec<i64>,
}

/// `weight: [out, in]` row-major, quantized by `vit_kernels`' own function and laid out
/// `[in, out]`.
pub(crate) fn quantize_per_output_channel(weight: &[f32], out_dim: usize, in_dim: usize) -> QuantizedWeight {
    let (by_row, scales) = vit_kernels::quantize_per_output_channel(weight, out_dim, in_dim);
    let mut values = vec![0i8; in_dim * out_dim];
    let mut column_sums = vec![0i64; out_dim];
    for c in 0..out_dim {
        for k in 0..in_dim {
            let q = by_row[c * in_dim + k];
            column_sums[c] += i64::from(q);
            values[k * out_dim + c] = q;
        }
    }
    QuantizedWeight { in_dim, out_dim, values, scales, column_sums }
}

/// One quantized dense layer to write into a graph.
pub(crate) struct QuantizedDense<'a> {
    /// The checkpoint name of the layer (initializers are named after it).
    pub(crate) prefix: &'a str,
    pub(crate) quantized: &'a QuantizedWeight,
    /// `[out]`, zeros for a layer without one.
    pub(crate) bias: &'a [f32],
}

impl QuantizedDense<'_> {
    /// `x: [..., in]` (float) to `[..., out]` (float).
    pub(crate) fn emit(&self, g: &mut GraphBuilder, x: &str) -> String {
        let q = self.quantized;
        let prefix = self.prefix;
        let last = [("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))];
        // The row's range, widened to hold 0.
        let zero = g.scalar("zero", 0.0);
        let row_min = g.node("ReduceMin", &[x], &last);
        let row_max = g.node("ReduceMax", &[x], &last);
        let lo = g.node("Min", &[&row_min, &zero], &[]);
        let hi = g.node("Max", &[&row_max, &zero], &[]);
        // s_r = (hi - lo) / 255; a row of zeros takes any positive scale (its codes are 0).
        let span = g.node("Sub", &[&hi, &lo], &[]);
        let steps = g.scalar("steps", 255.0);
        let scale = g.node("Div", &[&span, &steps], &[]);
        let smallest = g.scalar("smallest", f32::MIN_POSITIVE);
        let scale = g.node("Max", &[&scale, &smallest], &[]);
        // z_r = clamp(round(-lo / s_r), 0, 255); x_q = clamp(round(x / s_r) + z_r, 0, 255).
        let inverse = g.node("Reciprocal", &[&scale], &[]);
        let negative_lo = g.node("Neg", &[&lo], &[]);
        let shift = g.node("Mul", &[&negative_lo, &inverse], &[]);
        let shift = g.node("Round", &[&shift], &[]);
        let top = g.scalar("top", 255.0);
        let shift = g.node("Clip", &[&shift, &zero, &top], &[]);
        let scaled = g.node("Mul", &[x, &inverse], &[]);
        let rounded = g.node("Round", &[&scaled], &[]);
        let codes = g.node("Add", &[&rounded, &shift], &[]);
        let codes = g.node("Clip", &[&codes, &zero, &top], &[]);
        let codes = g.node("Cast", &[&codes], &[("to", Attr::Int(crate::proto::tensor_proto::DataType::Uint8 as i64))]);
        // Integer products, summed exactly in int32, less z_r times the column sums.
        let weight = g.int8s(&format!("{prefix}.weight_q"), &[q.in_dim, q.out_dim], &q.values);
        let sums = g.node("MatMulInteger", &[&codes, &weight], &[]);
        let int32 = crate::proto::tensor_proto::DataType::Int32 as i64;
        let shift = g.node("Cast", &[&shift], &[("to", Attr::Int(int32))]);
        let column_sums = g.int32s(&format!("{prefix}.column_sums"), &[q.out_dim], &q.column_sums);
        let offsets = g.node("Mul", &[&shift, &column_sums], &[]);
        let exact = g.node("Sub", &[&sums, &offsets], &[]);
        let exact = g.node("Cast", &[&exact], &[("to", Attr::Int(crate::proto::tensor_proto::DataType::Float as i64))]);
        // y = (sums - z_r colsum) (s_r s_c) + b.
        let channel_scales = g.initializer(&format!("{prefix}.weight_scale"), &[q.out_dim], &q.scales);
        let scales = g.node("Mul", &[&scale, &channel_scales], &[]);
        let y = g.node("Mul", &[&exact, &scales], &[]);
        let bias = g.initializer(&format!("{prefix}.bias"), &[q.out_dim], self.bias);
        g.node("Add", &[&y, &bias], &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_quantized_per_output_channel_and_stored_in_by_out() {
        // Two outputs of three inputs: channel 0 spans 254 (a scale of 2), channel 1 is zero.
        let w = [254.0, -61.0, 3.0, 0.0, 0.0, 0.0];
        let q = quantize_per_output_channel(&w, 2, 3);
        assert_eq!(q.scales, vec![2.0, 1.0]);
        // [in, out]: input k of output c at k * out + c; -30.5 and 1.5 round away from zero.
        assert_eq!(q.values, vec![127, 0, -31, 0, 2, 0]);
        assert_eq!(q.column_sums, vec![98, 0]);
    }
}
