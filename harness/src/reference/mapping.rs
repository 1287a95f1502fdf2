//! Mapping llama.cpp's graph nodes to canonical trace points (DESIGN.md, "Trace points").
//!
//! llama.cpp names nodes through its graph callback (`name-<layer>`), and names repeat: `Qcur-0`
//! is the projection, its reshape and the RoPE output; a projection with a `.scale` tensor is an
//! unnamed `node_N` matmul followed by a named multiply. A point is therefore identified by name
//! and operation, and among nodes that still match, the last one computed wins (the reshapes of
//! `Vcur` share their data). The token embeddings are an unnamed `GET_ROWS` of
//! `token_embd.weight` (llama.cpp's `inp_embd` is the input for vector embeddings, unused here).

use bitnet_engine::trace::{Stage, TracePoint};

/// The operation a node must have, when its name alone is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpFilter {
    Any,
    Rope,
    SoftMax,
    /// `GET_ROWS` from `token_embd.weight`, whatever the node's name.
    TokenRows,
}

/// What the eval callback knows of a node's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOp {
    Rope,
    SoftMax,
    /// `GET_ROWS` of `token_embd.weight` by `inp_tokens`.
    TokenRows,
    Other,
}

/// The llama.cpp node name (without the `-<layer>` suffix) and operation of each stage.
pub fn llama_name(stage: Stage) -> (&'static str, OpFilter) {
    match stage {
        Stage::Embeddings => ("", OpFilter::TokenRows),
        Stage::AttnNorm => ("attn_norm", OpFilter::Any),
        Stage::Q => ("Qcur", OpFilter::Rope),
        Stage::K => ("Kcur", OpFilter::Rope),
        Stage::V => ("Vcur", OpFilter::Any),
        Stage::AttnProbs => ("kq_soft_max", OpFilter::SoftMax),
        Stage::KqvOut => ("kqv_out", OpFilter::Any),
        Stage::AttnSubNorm => ("attn_sub_norm", OpFilter::Any),
        Stage::AttnOut => ("attn_out", OpFilter::Any),
        Stage::FfnInp => ("ffn_inp", OpFilter::Any),
        Stage::FfnNorm => ("ffn_norm", OpFilter::Any),
        Stage::FfnAct => ("ffn_sub_out", OpFilter::Any),
        Stage::FfnSubNorm => ("ffn_sub_norm", OpFilter::Any),
        Stage::FfnDown => ("ffn_down", OpFilter::Any),
        Stage::Out => ("l_out", OpFilter::Any),
        Stage::OutputNorm => ("result_norm", OpFilter::Any),
        Stage::Logits => ("result_output", OpFilter::Any),
    }
}

/// The canonical point of a node, given its name and operation.
pub fn canonical(node_name: &str, op: NodeOp) -> Option<TracePoint> {
    if op == NodeOp::TokenRows {
        return Some(TracePoint {
            layer: None,
            stage: Stage::Embeddings,
        });
    }
    let (base, layer) = match node_name.rsplit_once('-') {
        Some((b, l)) if !l.is_empty() && l.bytes().all(|c| c.is_ascii_digit()) => {
            (b, Some(l.parse::<u32>().ok()?))
        }
        _ => (node_name, None),
    };
    let stages = [Stage::Embeddings, Stage::OutputNorm, Stage::Logits]
        .into_iter()
        .chain(Stage::LAYER);
    for stage in stages {
        let (name, want) = llama_name(stage);
        if name != base || stage.is_layer() != layer.is_some() {
            continue;
        }
        let op_ok = match want {
            OpFilter::Any => true,
            OpFilter::Rope => op == NodeOp::Rope,
            OpFilter::SoftMax => op == NodeOp::SoftMax,
            OpFilter::TokenRows => false,
        };
        return op_ok.then_some(TracePoint { layer, stage });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ops_select_one_node_per_point() {
        let p = |n: &str| TracePoint::parse(n).unwrap();
        assert_eq!(
            canonical("node_3", NodeOp::TokenRows),
            Some(p("embeddings"))
        );
        assert_eq!(
            canonical("attn_norm-3", NodeOp::Other),
            Some(p("blk.3.attn_norm"))
        );
        // Qcur before RoPE (the projection, its reshape) is not the canonical q.
        assert_eq!(canonical("Qcur-0", NodeOp::Other), None);
        assert_eq!(canonical("Qcur-0", NodeOp::Rope), Some(p("blk.0.q")));
        assert_eq!(canonical("Kcur-12", NodeOp::Rope), Some(p("blk.12.k")));
        assert_eq!(canonical("Vcur-1", NodeOp::Other), Some(p("blk.1.v")));
        assert_eq!(
            canonical("kq_soft_max-0", NodeOp::SoftMax),
            Some(p("blk.0.attn_probs"))
        );
        assert_eq!(canonical("kq-0", NodeOp::Other), None);
        assert_eq!(
            canonical("ffn_sub_out-2", NodeOp::Other),
            Some(p("blk.2.ffn_act"))
        );
        assert_eq!(canonical("l_out-0", NodeOp::Other), Some(p("blk.0.out")));
        assert_eq!(
            canonical("result_norm", NodeOp::Other),
            Some(p("output_norm"))
        );
        assert_eq!(canonical("result_output", NodeOp::Other), Some(p("logits")));
        // Unnamed matmuls (before a `.scale` multiply) and inner nodes map to nothing.
        assert_eq!(canonical("node_17", NodeOp::Other), None);
        assert_eq!(canonical("norm-0", NodeOp::Other), None);
        assert_eq!(canonical("attn_norm", NodeOp::Other), None);
        assert_eq!(canonical("inp_embd", NodeOp::Other), None);
        // Every canonical point has a llama.cpp name.
        for point in TracePoint::all(2) {
            let (name, op) = llama_name(point.stage);
            let full = match point.layer {
                Some(l) => format!("{name}-{l}"),
                None => name.to_string(),
            };
            let node_op = match op {
                OpFilter::Rope => NodeOp::Rope,
                OpFilter::SoftMax => NodeOp::SoftMax,
                OpFilter::TokenRows => NodeOp::TokenRows,
                OpFilter::Any => NodeOp::Other,
            };
            let got = canonical(&full, node_op);
            assert_eq!(got, Some(point), "{full}");
        }
    }
}
