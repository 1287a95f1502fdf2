//! A BitNet model loaded from GGUF: its configuration from metadata and its weights by tensor
//! name, as llama.cpp's `bitnet` architecture loads them (`src/models/bitnet.cpp`). Ternary and
//! F16 weights stay in the memory-mapped file; only norm vectors and scales are copied, and TQ1_0
//! weights are rewritten once as 2-bit codes when a session asks for it ([`Model::tq1_as_tq2`]).

use std::path::Path;
use std::sync::OnceLock;

use crate::gguf::{GgmlType, GgufError, GgufFile, TensorInfo, Value};
use crate::kernels::scalar::tq1_0_to_tq2_0;
use crate::kernels::{grouped_copy_into, Matrix, GROUPS, TABLE_ROWS};

/// Why a model could not be loaded: the key or tensor, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(
        "`{file}`: architecture is `{found}`; this engine runs `bitnet` (SiLU FFN, llama.cpp's) and `bitnet-b1.58` (ReLU² FFN, bitnet.cpp's; older files say `bitnet-25`)"
    )]
    Architecture { file: String, found: String },
    #[error("`{file}`: missing metadata key `{key}` ({expected})")]
    MissingKey {
        file: String,
        key: String,
        expected: &'static str,
    },
    #[error("`{file}`: metadata key `{key}` is {found}, expected {expected}")]
    BadKey {
        file: String,
        key: String,
        found: String,
        expected: String,
    },
    #[error("`{file}`: tensor `{tensor}`: {what}")]
    Tensor {
        file: String,
        tensor: String,
        what: String,
    },
    #[error("environment variable {var} is `{found}`, expected {expected}")]
    Setting {
        var: &'static str,
        found: String,
        expected: &'static str,
    },
}

/// Where [`Model::load`] holds the weights: copied into anonymous memory advised for transparent
/// huge pages (the default; see [`GgufFile::open_huge_pages`]), or read in place from the file's
/// pages. `BITNET_WEIGHT_PAGES=huge|file` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightPages {
    Huge,
    File,
}

impl WeightPages {
    pub const VAR: &'static str = "BITNET_WEIGHT_PAGES";

    /// From [`WeightPages::VAR`]: unset or empty is [`WeightPages::Huge`].
    pub fn from_env() -> Result<WeightPages, ModelError> {
        match std::env::var(Self::VAR) {
            Err(_) => Ok(WeightPages::Huge),
            Ok(v) => WeightPages::parse(&v).ok_or(ModelError::Setting {
                var: Self::VAR,
                found: v,
                expected: "`huge` (weights copied into huge pages) or `file` (the file's pages)",
            }),
        }
    }

    /// `huge`, `file` or empty (the default).
    pub fn parse(s: &str) -> Option<WeightPages> {
        match s.trim() {
            "" | "huge" => Some(WeightPages::Huge),
            "file" => Some(WeightPages::File),
            _ => None,
        }
    }
}

/// The architectures the engine runs: the same graph (llama.cpp's `src/models/bitnet.cpp`) with
/// the FFN activation as the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// llama.cpp's `bitnet`: `silu(gate) · up` (build_ffn with LLM_FFN_SILU, LLM_FFN_PAR).
    Bitnet,
    /// bitnet.cpp's `bitnet-b1.58` (BitNet b1.58 2B4T; `bitnet-25` in older files):
    /// `relu(gate)² · up` (LLM_FFN_RELU_SQR: ggml_relu, ggml_sqr, then ggml_mul by up).
    BitnetB158,
}

/// The FFN's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FfnAct {
    /// `silu(gate) · up` (ggml_swiglu_split).
    Silu,
    /// `relu(gate)² · up`.
    Relu2,
}

impl Arch {
    /// Every `general.architecture` value the engine loads, with its architecture.
    pub const NAMES: [(&'static str, Arch); 3] = [
        ("bitnet", Arch::Bitnet),
        ("bitnet-b1.58", Arch::BitnetB158),
        ("bitnet-25", Arch::BitnetB158),
    ];

    /// The architecture of a `general.architecture` value; `None` when the engine does not know it.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, a)| a)
    }

    /// The FFN activation of the architecture.
    pub fn ffn(self) -> FfnAct {
        match self {
            Arch::Bitnet => FfnAct::Silu,
            Arch::BitnetB158 => FfnAct::Relu2,
        }
    }

    /// Whether llama.cpp (the reference linked into the harness) runs this architecture.
    pub fn llama_cpp_runs(self) -> bool {
        self == Arch::Bitnet
    }
}

/// Hyperparameters of a `bitnet`-family architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    /// `general.architecture` as the file spells it: the prefix of its hyperparameter keys.
    pub arch_name: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rope_base: f32,
    /// Dimensions RoPE rotates (`rope.dimension_count`, default head_dim).
    pub n_rot: usize,
    pub rms_eps: f32,
}

/// One transformer block's weights.
#[derive(Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub attn_sub_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub ffn_sub_norm: Vec<f32>,
    pub wq: Proj,
    pub wk: Proj,
    pub wv: Proj,
    pub wo: Proj,
    pub w_gate: Proj,
    pub w_up: Proj,
    pub w_down: Proj,
}

impl Layer {
    /// The block's seven projections, attention first.
    pub fn projections(&self) -> [&Proj; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }
}

/// A projection: a weight tensor and its optional per-tensor scale.
#[derive(Debug, Clone)]
pub struct Proj {
    pub info: TensorInfo,
    pub scale: Option<f32>,
}

/// Every TQ1_0 projection's weights as TQ2_0 blocks, back to back in one buffer, made once on
/// first use and shared by every session ([`Model::tq1_as_tq2`]). One buffer, in anonymous
/// memory advised for transparent huge pages when the file's bytes are held so (a buffer per
/// tensor would be too small for 2 MiB pages to cover).
struct Rewritten {
    bytes: memmap2::Mmap,
    /// Each rewritten tensor by its data offset in the file: (start, length) in `bytes`.
    at: std::collections::HashMap<u64, (usize, usize)>,
}

/// A loaded model.
pub struct Model {
    pub file: GgufFile,
    pub config: Config,
    pub token_embd: TensorInfo,
    pub output_norm: Vec<f32>,
    pub layers: Vec<Layer>,
    /// The vocabulary stored in the file, if it has one the engine can tokenize text with.
    pub tokenizer: Option<crate::tokenizer::Tokenizer>,
    /// Why a vocabulary the file has (one llama.cpp runs) cannot tokenize text here; the model
    /// still runs on token ids.
    pub tokenizer_unsupported: Option<String>,
    /// The TQ1_0 projections rewritten as TQ2_0, once asked for.
    tq2: OnceLock<Rewritten>,
    /// The TQ2_0 projections with rows grouped by each of [`GROUPS`], then the TQ2_0 and I2_S
    /// ones in the table-lookup layout ([`TABLE_ROWS`]) ([`Model::grouped_weights`]), each once
    /// asked for.
    grouped: [OnceLock<Rewritten>; GROUPS.len() + 1],
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish()
    }
}

impl Model {
    /// The tokenizer for text prompts, or why there is none (`file` names the model).
    pub fn text_tokenizer(&self, file: &str) -> Result<&crate::tokenizer::Tokenizer, String> {
        match (&self.tokenizer, &self.tokenizer_unsupported) {
            (Some(t), _) => Ok(t),
            (None, Some(why)) => Err(format!(
                "{why}: text prompts cannot be tokenized here; give token ids"
            )),
            (None, None) => Err(format!(
                "`{file}` has no vocabulary (`tokenizer.ggml.model = none`): give token ids"
            )),
        }
    }

    /// Load and validate `path`, the weights held as [`WeightPages::from_env`] says (and the
    /// KV cache's pages setting, [`crate::attention::KV_PAGES_VAR`], checked).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let var = crate::attention::KV_PAGES_VAR;
        if let Ok(v) = std::env::var(var) {
            if crate::attention::parse_kv_pages(&v).is_none() {
                return Err(ModelError::Setting {
                    var,
                    found: v,
                    expected: "`small` (the KV cache in small pages, the default) or `huge` \
                               (in huge pages, kept for reuse)",
                });
            }
        }
        Model::load_with(path, WeightPages::from_env()?)
    }

    /// Load and validate `path`, the weights held as `pages` says.
    pub fn load_with(path: &Path, pages: WeightPages) -> Result<Model, ModelError> {
        Model::from_file(match pages {
            WeightPages::Huge => GgufFile::open_huge_pages(path)?,
            WeightPages::File => GgufFile::open(path)?,
        })
    }

    /// Validate an opened file.
    pub fn from_file(file: GgufFile) -> Result<Model, ModelError> {
        let name = file.name().to_string();
        let arch = match file.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(ModelError::BadKey {
                    file: name,
                    key: "general.architecture".into(),
                    found: v.type_name().into(),
                    expected: "a string".into(),
                })
            }
            None => {
                return Err(ModelError::MissingKey {
                    file: name,
                    key: "general.architecture".into(),
                    expected: "a string",
                })
            }
        };
        let Some(kind) = Arch::from_name(&arch) else {
            return Err(ModelError::Architecture {
                file: name,
                found: arch,
            });
        };
        let config = read_config(&file, kind, &arch)?;
        // A tensor the architecture does not use: llama.cpp refuses the file ("wrong number of
        // tensors"); running without it would ignore what its writer meant.
        if let Some(t) = file
            .tensors()
            .iter()
            .find(|t| !crate::arch::is_known_tensor(&t.name))
        {
            return Err(ModelError::Tensor {
                file: name.clone(),
                tensor: t.name.clone(),
                what: format!(
                    "not a tensor of `{arch}`, which llama.cpp refuses (wrong number of tensors){}",
                    if t.name == "output.weight" {
                        ": the output is tied to `token_embd.weight`, a separate output matrix is not read"
                    } else {
                        ""
                    }
                ),
            });
        }
        let c = &config;
        let tensor =
            |t: &str, dims: &[usize], types: &[GgmlType]| -> Result<TensorInfo, ModelError> {
                let info = file.tensor(t).ok_or_else(|| ModelError::Tensor {
                    file: name.clone(),
                    tensor: t.into(),
                    what: "missing".into(),
                })?;
                let want: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
                if info.dims != want {
                    return Err(ModelError::Tensor {
                        file: name.clone(),
                        tensor: t.into(),
                        what: format!("shape {:?}, expected {want:?}", info.dims),
                    });
                }
                if !types.contains(&info.ty) {
                    return Err(ModelError::Tensor {
                        file: name.clone(),
                        tensor: t.into(),
                        what: format!(
                            "type {} is not supported here (expected one of {})",
                            info.ty,
                            types
                                .iter()
                                .map(|t| t.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                Ok(info.clone())
            };
        let vector = |t: &str, n: usize| -> Result<Vec<f32>, ModelError> {
            let info = tensor(t, &[n], crate::arch::VECTOR_TYPES)?;
            crate::quant::dequantize(info.ty, file.tensor_data(&info), n).map_err(|e| {
                ModelError::Tensor {
                    file: name.clone(),
                    tensor: t.into(),
                    what: e.to_string(),
                }
            })
        };
        let proj = |base: &str, n_in: usize, n_out: usize| -> Result<Proj, ModelError> {
            let info = tensor(
                &format!("{base}.weight"),
                &[n_in, n_out],
                crate::arch::PROJECTION_TYPES,
            )?;
            let scale_name = format!("{base}.scale");
            let scale = match file.tensor(&scale_name) {
                None => None,
                Some(_) => Some(vector(&scale_name, 1)?[0]),
            };
            Ok(Proj { info, scale })
        };
        let token_embd = tensor(
            "token_embd.weight",
            &[c.n_embd, c.n_vocab],
            crate::arch::EMBEDDING_TYPES,
        )?;
        let output_norm = vector("output_norm.weight", c.n_embd)?;
        let kv = c.n_head_kv * c.head_dim;
        // Not pre-sized: the count was checked against the file, but grows with what is read.
        let mut layers = Vec::new();
        for l in 0..c.n_layer {
            let b = |t: &str| format!("blk.{l}.{t}");
            layers.push(Layer {
                attn_norm: vector(&b("attn_norm.weight"), c.n_embd)?,
                attn_sub_norm: vector(&b("attn_sub_norm.weight"), c.n_embd)?,
                ffn_norm: vector(&b("ffn_norm.weight"), c.n_embd)?,
                ffn_sub_norm: vector(&b("ffn_sub_norm.weight"), c.n_ff)?,
                wq: proj(&b("attn_q"), c.n_embd, c.n_embd)?,
                wk: proj(&b("attn_k"), c.n_embd, kv)?,
                wv: proj(&b("attn_v"), c.n_embd, kv)?,
                wo: proj(&b("attn_output"), c.n_embd, c.n_embd)?,
                w_gate: proj(&b("ffn_gate"), c.n_embd, c.n_ff)?,
                w_up: proj(&b("ffn_up"), c.n_embd, c.n_ff)?,
                w_down: proj(&b("ffn_down"), c.n_ff, c.n_embd)?,
            });
        }
        let (tokenizer, tokenizer_unsupported) = match crate::tokenizer::Tokenizer::from_gguf(&file)
        {
            Ok(t) => (t, None),
            Err(e) if e.llama_cpp_runs_it() => (None, Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        if let Some(t) = &tokenizer {
            if t.len() != c.n_vocab {
                return Err(ModelError::BadKey {
                    file: name.clone(),
                    key: "tokenizer.ggml.tokens".into(),
                    found: format!("{} tokens", t.len()),
                    expected: format!("the vocabulary size {}", c.n_vocab),
                });
            }
        }
        Ok(Model {
            file,
            config,
            token_embd,
            output_norm,
            layers,
            tokenizer,
            tokenizer_unsupported,
            tq2: OnceLock::new(),
            grouped: Default::default(),
        })
    }

    /// The weights of a projection as a matrix view.
    pub fn matrix(&self, p: &Proj) -> Matrix<'_> {
        Matrix {
            ty: p.info.ty,
            data: self.file.tensor_data(&p.info),
            rows: p.info.dims[1] as usize,
            cols: p.info.dims[0] as usize,
            grouped: None,
        }
    }

    /// A TQ1_0 projection's weights as TQ2_0 blocks ([`tq1_0_to_tq2_0`]: same codes, same
    /// scales, bit-identical products), rewritten on the first call and kept. The x86 kernels
    /// unpack 2-bit codes several times faster than base-3 ones, at 22% more bytes per weight.
    pub fn tq1_as_tq2<'a>(&'a self, p: &'a Proj) -> Matrix<'a> {
        assert_eq!(
            p.info.ty,
            GgmlType::TQ1_0,
            "only TQ1_0 weights are rewritten"
        );
        let r = self.tq2.get_or_init(|| self.rewrite_tq1());
        let &(start, len) =
            r.at.get(&p.info.offset)
                .expect("every TQ1_0 projection of this model's layers is rewritten");
        let data = &r.bytes[start..start + len];
        Matrix {
            ty: GgmlType::TQ2_0,
            data,
            rows: p.info.dims[1] as usize,
            cols: p.info.dims[0] as usize,
            grouped: None,
        }
    }

    /// Every TQ1_0 projection of the layers rewritten as TQ2_0 into one buffer, in huge pages
    /// when the file's bytes are (see [`Rewritten`]).
    fn rewrite_tq1(&self) -> Rewritten {
        // Where each tensor goes (sizes from the TQ2_0 layout), then each rewritten in turn, so
        // at most one tensor's rewrite is held besides the buffer.
        let mut at = std::collections::HashMap::new();
        let mut todo = Vec::new();
        let mut total = 0usize;
        for p in self.layers.iter().flat_map(|l| l.projections()) {
            if p.info.ty == GgmlType::TQ1_0 && !at.contains_key(&p.info.offset) {
                let len = GgmlType::TQ2_0
                    .data_bytes(p.info.dims[0], p.info.n_elements())
                    .and_then(|n| usize::try_from(n).ok())
                    .expect("a loaded TQ1_0 tensor's shape has a TQ2_0 size");
                at.insert(p.info.offset, (total, len));
                todo.push((total, len, &p.info));
                total += len;
            }
        }
        let mut buf = self.anon_buffer(total);
        for (start, len, info) in todo {
            buf[start..start + len].copy_from_slice(&tq1_0_to_tq2_0(self.file.tensor_data(info)));
        }
        let bytes = buf
            .make_read_only()
            .unwrap_or_else(|e| panic!("cannot seal the rewritten weights: {e}"));
        Rewritten { bytes, at }
    }

    /// `total` bytes of anonymous memory, advised for huge pages when the file's bytes are.
    fn anon_buffer(&self, total: usize) -> memmap2::MmapMut {
        // Mapping fails only when the memory is not there, as a vector's allocation would.
        let buf = memmap2::MmapMut::map_anon(total.max(1))
            .unwrap_or_else(|e| panic!("cannot map {total} bytes for the rewritten weights: {e}"));
        if self.file.huge_pages_advised() {
            // Advice only, as for the file's copy.
            let _ = buf.advise(memmap2::Advice::HugePage);
        }
        buf
    }

    /// The weights of projection `p` (as [`Model::matrix`] gives them, or [`Model::tq1_as_tq2`]
    /// for a TQ1_0 projection) with rows grouped by `g` ([`crate::kernels::grouped_copy`]), for
    /// the decode kernels that read a group as one stream: TQ2_0 weights by each of [`GROUPS`]
    /// and [`TABLE_ROWS`], I2_S weights by [`TABLE_ROWS`] (the table-lookup layout). Every such
    /// projection of the layers is grouped on the first call for `g` and kept, in one buffer
    /// beside the file's copy (so a model decoded this way holds its ternary weights twice).
    /// `None` for a `g` neither in [`GROUPS`] nor [`TABLE_ROWS`], a projection of another type,
    /// or a TQ1_0 one not rewritten when the buffer was made.
    pub fn grouped_weights(&self, p: &Proj, g: usize) -> Option<&[u8]> {
        let i = GROUPS
            .iter()
            .position(|&x| x == g)
            .or((g == TABLE_ROWS).then_some(GROUPS.len()))?;
        let r = self.grouped[i].get_or_init(|| self.group_weights(g));
        let &(start, len) = r.at.get(&p.info.offset)?;
        Some(&r.bytes[start..start + len])
    }

    /// Every projection of the layers [`Model::grouped_weights`] groups by `g` (TQ2_0, the TQ1_0
    /// ones already rewritten as TQ2_0, and I2_S for [`TABLE_ROWS`]) into one buffer (see
    /// [`Rewritten`]).
    fn group_weights(&self, g: usize) -> Rewritten {
        let rewritten = self.tq2.get();
        let mut at = std::collections::HashMap::new();
        let mut todo = Vec::new();
        let mut total = 0usize;
        for p in self.layers.iter().flat_map(|l| l.projections()) {
            let (ty, data) = match p.info.ty {
                GgmlType::TQ2_0 => (GgmlType::TQ2_0, self.file.tensor_data(&p.info)),
                GgmlType::TQ1_0 => match rewritten.and_then(|r| r.at.get(&p.info.offset)) {
                    Some(&(start, len)) => (
                        GgmlType::TQ2_0,
                        &rewritten.expect("checked").bytes[start..start + len],
                    ),
                    None => continue,
                },
                // The table-lookup layout is an x86 kernel's.
                GgmlType::I2_S if g == TABLE_ROWS && cfg!(target_arch = "x86_64") => {
                    (GgmlType::I2_S, self.file.tensor_data(&p.info))
                }
                _ => continue,
            };
            if let std::collections::hash_map::Entry::Vacant(e) = at.entry(p.info.offset) {
                e.insert((total, data.len()));
                let (cols, rows) = (p.info.dims[0] as usize, p.info.dims[1] as usize);
                todo.push((total, ty, data, rows, cols));
                total += data.len();
            }
        }
        let mut buf = self.anon_buffer(total);
        for (start, ty, data, rows, cols) in todo {
            grouped_copy_into(ty, data, rows, cols, g, &mut buf[start..start + data.len()]);
        }
        let bytes = buf
            .make_read_only()
            .unwrap_or_else(|e| panic!("cannot seal the grouped weights: {e}"));
        Rewritten { bytes, at }
    }

    /// The token embedding (also the tied output matrix).
    pub fn embedding(&self) -> Matrix<'_> {
        Matrix {
            ty: self.token_embd.ty,
            data: self.file.tensor_data(&self.token_embd),
            rows: self.config.n_vocab,
            cols: self.config.n_embd,
            grouped: None,
        }
    }
}

/// A GGUF file's `<general.architecture>.context_length`, as [`Model::load`] reads it, without
/// loading the model; `None` when the architecture or the value cannot be read (absent, or not
/// a uint32: loading the model then says why).
pub fn context_length(f: &GgufFile) -> Option<u64> {
    let arch = f.get("general.architecture")?.as_str()?;
    match f.get(&format!("{arch}.context_length")) {
        Some(Value::U32(n)) => Some(u64::from(*n)),
        _ => None,
    }
}

fn read_config(f: &GgufFile, arch: Arch, prefix: &str) -> Result<Config, ModelError> {
    let name = f.name().to_string();
    let found = |v: &Value| format!("{} {}", v.type_name(), v.display_short());
    // Hyperparameters llama.cpp reads as a uint32: exactly that type (it refuses the model
    // otherwise).
    let int = |key: &str, default: Option<usize>| -> Result<usize, ModelError> {
        let full = format!("{prefix}.{key}");
        match f.get(&full) {
            Some(Value::U32(x)) => Ok(*x as usize),
            Some(v) => Err(ModelError::BadKey {
                file: name.clone(),
                key: full.clone(),
                found: found(v),
                expected: "a uint32".into(),
            }),
            None => default.ok_or(ModelError::MissingKey {
                file: name.clone(),
                key: full,
                expected: "a uint32",
            }),
        }
    };
    // `vocab_size`, which llama.cpp does not read for a vocabulary it has: any integer.
    let any_int = |key: &str| -> Result<usize, ModelError> {
        let full = format!("{prefix}.{key}");
        let v = f.get(&full).expect("asked for a present key");
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| ModelError::BadKey {
                file: name.clone(),
                key: full.clone(),
                found: found(v),
                expected: "a non-negative integer".into(),
            })
    };
    // General keys llama.cpp reads with a type: `file_type` a uint32, `name` a string.
    let typed = [
        (
            "general.file_type",
            "a uint32",
            matches!(f.get("general.file_type"), Some(Value::U32(_))),
        ),
        (
            "general.name",
            "a string",
            matches!(f.get("general.name"), Some(Value::String(_))),
        ),
    ];
    for (key, what, ok) in typed {
        if let Some(v) = f.get(key).filter(|_| !ok) {
            return Err(ModelError::BadKey {
                file: name.clone(),
                key: key.into(),
                found: found(v),
                expected: what.into(),
            });
        }
    }
    let float = |key: &str, default: Option<f32>| -> Result<f32, ModelError> {
        let full = format!("{prefix}.{key}");
        match f.get(&full) {
            // Exactly a float32, as llama.cpp reads it (it refuses a float64 or an integer).
            Some(Value::F32(x)) => Ok(*x),
            Some(v) => Err(ModelError::BadKey {
                file: name.clone(),
                key: full.clone(),
                found: format!("{} {}", v.type_name(), v.display_short()),
                expected: "a float32".into(),
            }),
            None => default.ok_or(ModelError::MissingKey {
                file: name.clone(),
                key: full,
                expected: "a float",
            }),
        }
    };
    let n_embd = int("embedding_length", None)?;
    let n_layer = int("block_count", None)?;
    // Keys llama.cpp also takes as one value per layer (an array of uint32 or int32, one per
    // layer): the engine runs one size for every layer, so such an array must hold one value.
    let per_layer = |key: &str, default: Option<usize>| -> Result<usize, ModelError> {
        let full = format!("{prefix}.{key}");
        let Some(Value::Array(a)) = f.get(&full) else {
            return int(key, default);
        };
        let bad = |expected: String| ModelError::BadKey {
            file: name.clone(),
            key: full.clone(),
            found: format!("array {}", Value::Array(a.clone()).display_short()),
            expected,
        };
        if !crate::arch::is_per_layer_array(a) {
            return Err(bad(
                "a uint32, or an array of uint32 or int32, one per layer".into(),
            ));
        }
        if a.values.len() != n_layer {
            return Err(bad(format!(
                "one value per layer: {n_layer} (`{prefix}.block_count`), not {}",
                a.values.len()
            )));
        }
        match crate::arch::one_value_per_layer(a) {
            Ok(v) => Ok(v as usize),
            Err(Some((k, v, vk))) => Err(bad(format!(
                "one value for every layer: the engine runs one size for all layers (layer 0 has {v}, layer {k} has {vk})"
            ))),
            Err(None) => Err(bad("non-negative values".into())),
        }
    };
    let n_head = per_layer("attention.head_count", None)?;
    let n_head_kv = per_layer("attention.head_count_kv", Some(n_head))?;
    let n_ff = per_layer("feed_forward_length", None)?;
    let bad = |key: &str, found: usize, expected: &str| ModelError::BadKey {
        file: name.clone(),
        key: format!("{prefix}.{key}"),
        found: found.to_string(),
        expected: expected.into(),
    };
    if n_layer == 0 {
        return Err(bad("block_count", n_layer, "at least 1"));
    }
    if n_embd == 0 {
        return Err(bad("embedding_length", n_embd, "at least 1"));
    }
    if n_head == 0 || n_embd % n_head != 0 {
        return Err(bad(
            "attention.head_count",
            n_head,
            "a divisor of the embedding length",
        ));
    }
    if n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(bad(
            "attention.head_count_kv",
            n_head_kv,
            "a divisor of the head count",
        ));
    }
    let head_dim = n_embd / n_head;
    let n_rot = int("rope.dimension_count", Some(head_dim))?;
    // 0 rotates nothing in the engine, and loops without end in ggml's CPU RoPE.
    if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
        return Err(bad(
            "rope.dimension_count",
            n_rot,
            "an even number from 2 up to the head size",
        ));
    }
    // What llama.cpp would run differently: head sizes other than n_embd / n_head (it shapes the
    // attention by these keys) and RoPE scaling (it scales the rotation angles). Refused rather
    // than run otherwise than the reference.
    for key in ["attention.key_length", "attention.value_length"] {
        if f.get(&format!("{prefix}.{key}")).is_some() {
            let v = int(key, None)?;
            if v != head_dim {
                return Err(bad(
                    key,
                    v,
                    &format!(
                        "the head size n_embd / n_head = {head_dim}, the only one the engine has"
                    ),
                ));
            }
        }
    }
    let scaling = |key: &str, found: String| ModelError::BadKey {
        file: name.clone(),
        key: format!("{prefix}.{key}"),
        found,
        expected: "no RoPE scaling (`none`, or `linear` with factor 1): the engine implements none"
            .into(),
    };
    let unscaled = match f.get(&format!("{prefix}.rope.scaling.type")) {
        None => false,
        Some(Value::String(t)) if t == "linear" => false,
        // llama.cpp never scales under `none`, whatever factor the file gives.
        Some(Value::String(t)) if t == "none" => true,
        Some(v) => return Err(scaling("rope.scaling.type", v.display_short())),
    };
    for key in ["rope.scaling.factor", "rope.scale_linear"]
        .into_iter()
        .filter(|_| !unscaled)
    {
        match f.get(&format!("{prefix}.{key}")) {
            None => {}
            Some(Value::F32(x)) if *x == 0.0 || *x == 1.0 => {}
            Some(v) => return Err(scaling(key, v.display_short())),
        }
    }
    // Keys llama.cpp reads for every architecture and the engine does not implement: each
    // would make llama.cpp compute something else (a scaled rotation, attention to later
    // positions) or refuse the file (a multi-token-prediction head's extra layers).
    let refuse = |key: &str, v: &Value, expected: &str| ModelError::BadKey {
        file: name.clone(),
        key: format!("{prefix}.{key}"),
        found: format!("{} {}", v.type_name(), v.display_short()),
        expected: expected.into(),
    };
    match f.get(&format!("{prefix}.rope.scaling.attn_factor")) {
        None => {}
        Some(Value::F32(x)) if *x == 1.0 => {}
        Some(v) => {
            return Err(refuse(
                "rope.scaling.attn_factor",
                v,
                "1 (llama.cpp multiplies RoPE's cosines and sines by it; the engine does not scale them)",
            ))
        }
    }
    match f.get(&format!("{prefix}.attention.causal")) {
        None | Some(Value::Bool(true)) => {}
        Some(v) => {
            return Err(refuse(
                "attention.causal",
                v,
                "true (the engine's attention is causal only)",
            ))
        }
    }
    match f.get(&format!("{prefix}.nextn_predict_layers")) {
        None => {}
        Some(v) if v.as_u64() == Some(0) => {}
        Some(v) => return Err(refuse(
            "nextn_predict_layers",
            v,
            "0 (next-token-prediction layers are not part of `bitnet`; llama.cpp refuses them too)",
        )),
    }
    let n_vocab = match f.get(&format!("{prefix}.vocab_size")) {
        Some(_) => any_int("vocab_size")?,
        None => match f.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
            Some(a) => a.values.len(),
            None => f
                .tensor("token_embd.weight")
                .map(|t| t.dims.get(1).copied().unwrap_or(0) as usize)
                .unwrap_or(0),
        },
    };
    // Each layer is at least 11 tensors: a block count beyond what the file holds is refused
    // before anything is sized by it, and so is one that leaves layers of the file unread.
    let n_tensors = f.tensors().len();
    if n_layer > n_tensors / 11 {
        return Err(bad(
            "block_count",
            n_layer,
            &format!(
                "at most {} (the file holds {n_tensors} tensors, 11 or more per layer)",
                n_tensors / 11
            ),
        ));
    }
    if f.tensor(&format!("blk.{n_layer}.attn_norm.weight"))
        .is_some()
    {
        return Err(bad(
            "block_count",
            n_layer,
            &format!("the number of layers in the file (it has a `blk.{n_layer}`)"),
        ));
    }
    let n_ctx_train = int("context_length", None)?;
    if n_ctx_train == 0 {
        return Err(bad("context_length", 0, "at least 1"));
    }
    let positive = |key: &str, v: f32| -> Result<f32, ModelError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(ModelError::BadKey {
                file: name.clone(),
                key: format!("{prefix}.{key}"),
                found: v.to_string(),
                expected: "a finite positive number".into(),
            })
        }
    };
    Ok(Config {
        arch,
        arch_name: prefix.to_string(),
        n_vocab,
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_ctx_train,
        rope_base: positive("rope.freq_base", float("rope.freq_base", Some(10000.0))?)?,
        n_rot,
        rms_eps: positive(
            "attention.layer_norm_rms_epsilon",
            float("attention.layer_norm_rms_epsilon", None)?,
        )?,
    })
}
