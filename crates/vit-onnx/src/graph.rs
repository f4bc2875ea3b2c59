//! A small builder of ONNX graphs: named values, nodes in order, initializers, constants.
//! It knows the protobuf messages and nothing of the ViT.

use crate::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// One dimension of a graph input or output: a fixed size or a named, dynamic one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size chosen by the caller at run time (`"batch"`).
    Named(&'static str),
}

/// An attribute value of a node.
#[derive(Debug, Clone)]
pub enum Attr {
    /// One integer.
    Int(i64),
    /// One float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
}

/// Builds a [`GraphProto`] node by node. Values are named by the builder (`{hint}_{n}`), so
/// that two nodes never write the same name.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// A float tensor stored in the graph (a weight): `values` in row-major order of `dims`.
    /// Returns its name, which is `name` itself (checkpoint names are unique already).
    pub fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, DataType::Float, raw)
    }

    /// An int64 tensor stored in the graph (a shape, axes, indices).
    pub fn int64s(&mut self, hint: &str, dims: &[usize], values: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(&name, dims, DataType::Int64, raw)
    }

    /// An int8 tensor stored in the graph (quantized weights).
    pub fn int8s(&mut self, name: &str, dims: &[usize], values: &[i8]) -> String {
        let raw: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        self.push_initializer(name, dims, DataType::Int8, raw)
    }

    /// An int32 tensor stored in the graph; every value must fit an int32.
    pub fn int32s(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect();
        self.push_initializer(name, dims, DataType::Int32, raw)
    }

    /// A 1-D int64 constant.
    pub fn int64_vector(&mut self, hint: &str, values: &[i64]) -> String {
        self.int64s(hint, &[values.len()], values)
    }

    /// A float scalar constant (rank 0).
    pub fn scalar(&mut self, hint: &str, value: f32) -> String {
        let name = self.fresh(hint);
        self.push_initializer(&name, &[], DataType::Float, value.to_le_bytes().to_vec())
    }

    fn push_initializer(&mut self, name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    /// Appends a node of `op` reading `inputs` and returns the name of its one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attr)]) -> String {
        let output = self.fresh(&op.to_ascii_lowercase());
        self.node_into(op, inputs, attributes, &[&output]);
        output
    }

    /// Appends a node of `op` with `n` outputs and returns their names.
    pub fn node_n(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attr)], n: usize) -> Vec<String> {
        let outputs: Vec<String> = (0..n).map(|_| self.fresh(&op.to_ascii_lowercase())).collect();
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        self.node_into(op, inputs, attributes, &refs);
        outputs
    }

    /// Appends a node of `op` writing the named `outputs` (a graph output, say).
    pub fn node_into(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attr)], outputs: &[&str]) {
        let name = format!("{op}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(name),
            op_type: Some(op.to_string()),
            attribute: attributes.iter().map(|(name, value)| attribute(name, value)).collect(),
            ..Default::default()
        });
    }

    /// The finished graph, with its float inputs and outputs.
    pub fn finish(
        self,
        name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        doc: &str,
    ) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(name.to_string()),
            initializer: self.initializers,
            doc_string: Some(doc.to_string()),
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto { name: Some(name.to_string()), ..Default::default() };
    match value {
        Attr::Int(i) => {
            a.i = Some(*i);
            a.r#type = Some(AttributeType::Int as i32);
        }
        Attr::Float(f) => {
            a.f = Some(*f);
            a.r#type = Some(AttributeType::Float as i32);
        }
        Attr::Ints(v) => {
            a.ints = v.clone();
            a.r#type = Some(AttributeType::Ints as i32);
        }
    }
    a
}

/// A float tensor input or output named `name` of shape `dims`, with `doc` describing it.
pub fn float_value(name: &str, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        doc_string: Some(doc.to_string()),
        ..Default::default()
    }
}
