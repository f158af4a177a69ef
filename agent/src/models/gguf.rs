//! GGUF header metadata, read without loading tensors (llama.cpp's `gguf_init_from_file` with
//! `no_alloc`), so listing and `/api/show` cost milliseconds even for large files.

use std::path::Path;

use llama_cpp_2::gguf::GgufContext;

/// The metadata the agent uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMeta {
    pub architecture: Option<String>,
    pub general_name: Option<String>,
    pub size_label: Option<String>,
    pub context_length: Option<u32>,
    pub chat_template: Option<String>,
    pub file_type: Option<u32>,
    pub block_count: Option<u32>,
    pub embedding_length: Option<u32>,
    pub head_count: Option<u32>,
    pub head_count_kv: Option<u32>,
    pub key_length: Option<u32>,
    pub value_length: Option<u32>,
    pub license: Option<String>,
}

// gguf_type values from ggml's gguf.h.
const T_UINT8: u32 = 0;
const T_INT8: u32 = 1;
const T_UINT16: u32 = 2;
const T_INT16: u32 = 3;
const T_UINT32: u32 = 4;
const T_INT32: u32 = 5;
const T_STRING: u32 = 8;
const T_UINT64: u32 = 10;
const T_INT64: u32 = 11;

impl GgufMeta {
    /// `None` when the file is not a readable GGUF.
    pub fn read(path: &Path) -> Option<Self> {
        let ctx = GgufContext::from_file(path)?;
        let s = |k: &str| read_str(&ctx, k);
        let u = |k: &str| read_u32(&ctx, k);
        let arch = s("general.architecture");
        let a = |suffix: &str| arch.as_deref().and_then(|ar| u(&format!("{ar}.{suffix}")));
        Some(Self {
            general_name: s("general.name"),
            size_label: s("general.size_label"),
            context_length: a("context_length"),
            chat_template: s("tokenizer.chat_template"),
            file_type: u("general.file_type"),
            block_count: a("block_count"),
            embedding_length: a("embedding_length"),
            head_count: a("attention.head_count"),
            head_count_kv: a("attention.head_count_kv"),
            key_length: a("attention.key_length"),
            value_length: a("attention.value_length"),
            license: s("general.license"),
            architecture: arch,
        })
    }

    /// Estimated f16 KV-cache bytes for `n_ctx` tokens, for memory accounting before a load.
    pub fn kv_bytes(&self, n_ctx: u32) -> u64 {
        let (Some(layers), Some(embd), Some(heads)) = (self.block_count, self.embedding_length, self.head_count) else {
            return 0;
        };
        let heads = heads.max(1);
        let kv_heads = self.head_count_kv.unwrap_or(heads);
        let k = self.key_length.unwrap_or(embd / heads);
        let v = self.value_length.unwrap_or(embd / heads);
        2 * u64::from(layers) * u64::from(n_ctx) * u64::from(kv_heads) * u64::from(k + v)
    }

    /// Ollama's `quantization_level` spelling of `general.file_type`.
    pub fn quantization(&self) -> Option<&'static str> {
        Some(match self.file_type? {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            7 => "Q8_0",
            8 => "Q5_0",
            9 => "Q5_1",
            10 => "Q2_K",
            11 => "Q3_K_S",
            12 => "Q3_K_M",
            13 => "Q3_K_L",
            14 => "Q4_K_S",
            15 => "Q4_K_M",
            16 => "Q5_K_S",
            17 => "Q5_K_M",
            18 => "Q6_K",
            32 => "BF16",
            _ => return None,
        })
    }
}

fn read_str(ctx: &GgufContext, key: &str) -> Option<String> {
    let i = ctx.find_key(key);
    if i < 0 || ctx.kv_type(i) != T_STRING {
        return None;
    }
    ctx.val_str(i).map(str::to_owned)
}

fn read_u32(ctx: &GgufContext, key: &str) -> Option<u32> {
    let i = ctx.find_key(key);
    if i < 0 {
        return None;
    }
    match ctx.kv_type(i) {
        T_UINT32 => Some(ctx.val_u32(i)),
        T_INT32 => u32::try_from(ctx.val_i32(i)).ok(),
        T_UINT64 | T_INT64 => u32::try_from(ctx.val_u64(i)).ok(),
        T_UINT8 | T_INT8 | T_UINT16 | T_INT16 => None,
        _ => None,
    }
}
