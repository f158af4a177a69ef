//! Model discovery: the files in `--models-dir`, named for users.
//!
//! A name resolves, in order, as a friendly name (from the catalog, else derived from the file
//! name), an alias (catalog or config), the file name, or the file stem. An Ollama tag `:latest`
//! is ignored; other tags are part of the name.

mod args;
pub mod catalog;
pub mod digest;
pub mod gguf;
pub mod library;
pub mod names;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

pub use args::{ModelArgs, OpenError};
pub use catalog::Catalog;
pub use gguf::GgufMeta;
pub use library::{Library, PullEvent, Residency};

use crate::{config::Config, settings::ModelSettings};

/// Model file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Rkllm,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "gguf" => Some(Self::Gguf),
            "rkllm" => Some(Self::Rkllm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gguf => "gguf",
            Self::Rkllm => "rkllm",
        }
    }
}

/// One model file and everything known about it without loading it.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub aliases: Vec<String>,
    pub file_name: String,
    pub path: PathBuf,
    pub format: Format,
    pub size: u64,
    pub modified: SystemTime,
    /// Context window served per sequence.
    pub context: u32,
    /// Context the model was trained for (GGUF) or converted for (`ctxNNNN`).
    pub context_max: Option<u32>,
    pub family: Option<String>,
    pub parameter_size: Option<String>,
    pub quantization: Option<String>,
    pub license: Option<String>,
    /// sha256 of the file: pinned by the catalog for this exact size, or computed once and
    /// cached beside the file (`digest`).
    pub sha256: Option<String>,
    pub meta: GgufMeta,
    pub settings: ModelSettings,
    /// What the model can do, decided once from its file and family (not per request).
    pub capabilities: Capabilities,
}

/// What a model can do, as Ollama's `/api/show` reports it and as requests are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Function calling: the template describes tools, or the engine sets them itself.
    pub tools: bool,
    /// Reasoning in a `<think>` block on request (RKLLM families that have it).
    pub thinking: bool,
    /// Sentence embeddings (both engines: llama.cpp pools a context, RKLLM the last hidden layer).
    pub embedding: bool,
    /// Image input. No engine here takes images yet.
    pub vision: bool,
}

impl Capabilities {
    /// Ollama's capability names, in its order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = vec!["completion"];
        for (on, name) in
            [(self.tools, "tools"), (self.embedding, "embedding"), (self.thinking, "thinking"), (self.vision, "vision")]
        {
            if on {
                v.push(name);
            }
        }
        v
    }

    /// `names`: what the model is known by, most telling first ([`ModelEntry::known_as`]).
    fn of(format: Format, meta: &GgufMeta, settings: &ModelSettings, family: Option<&str>, names: &[&str]) -> Self {
        let has_template = settings.chat_template.is_some() || meta.chat_template.is_some();
        // GGUF: a template to describe tools in, or Gemma's built-in one; RKLLM: the runtime's
        // `rkllm_set_function_tools`.
        let tools = match format {
            Format::Gguf => has_template || meta.architecture.as_deref().is_none_or(|a| a.starts_with("gemma")),
            Format::Rkllm => true,
        };
        let thinking = format == Format::Rkllm
            && crate::engine::rkllm::family::Family::detect(family, names).is_some_and(|f| f.thinking());
        Self { tools, thinking, embedding: true, vision: false }
    }
}

impl ModelEntry {
    /// An entry for a file that is not scanned (tests, and models assigned at run time):
    /// settings from `config`, nothing read from the file.
    pub fn unscanned(name: &str, path: PathBuf, format: Format, size: u64, config: &Config) -> Self {
        let settings = config.effective(name);
        let meta = GgufMeta::default();
        let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let capabilities = Capabilities::of(format, &meta, &settings, None, &[&file_name, name]);
        Self {
            name: name.to_owned(),
            aliases: settings.aliases.clone(),
            file_name,
            path,
            format,
            size,
            modified: SystemTime::UNIX_EPOCH,
            context: settings.context.unwrap_or(names::DEFAULT_CONTEXT),
            context_max: None,
            family: None,
            parameter_size: None,
            quantization: None,
            license: None,
            sha256: None,
            meta,
            settings,
            capabilities,
        }
    }

    /// The same file served under a cluster assignment's names and settings (its
    /// ModelDeployment's, not the config file's); capabilities follow the new settings. A file the
    /// catalog does not list takes its family from the catalog entry the served name or an alias
    /// names (`qwen3:0.6b`), if any.
    pub fn assigned(mut self, name: &str, aliases: &[String], settings: ModelSettings, catalog: &Catalog) -> Self {
        self.name = name.to_owned();
        self.aliases = aliases.to_vec();
        self.aliases.extend(settings.aliases.iter().cloned());
        if let Some(c) = settings.context {
            self.context = c;
        }
        if self.family.is_none() {
            self.family = self.known_as().into_iter().skip(1).find_map(|n| catalog.by_name(n)?.family.clone());
        }
        self.capabilities =
            Capabilities::of(self.format, &self.meta, &settings, self.family.as_deref(), &self.known_as());
        self.settings = settings;
        self
    }

    /// The names this model is known by, most telling first: the file name it was dropped in,
    /// pulled or assigned as (its path may be a store blob named by its digest), the served name,
    /// then the aliases. What the engines detect a model's family from.
    pub fn known_as(&self) -> Vec<&str> {
        let mut v = vec![self.file_name.as_str(), self.name.as_str()];
        v.extend(self.aliases.iter().map(String::as_str));
        v
    }

    /// Bytes this model needs resident: weights plus an f16 KV cache for `parallel` sequences.
    pub fn memory_estimate(&self, parallel: u32) -> u64 {
        self.size + self.meta.kv_bytes(self.context * parallel.max(1))
    }

    fn matches(&self, wanted: &str) -> bool {
        self.name == wanted
            || self.aliases.iter().any(|a| a == wanted)
            || self.file_name == wanted
            || self.file_name.rsplit_once('.').is_some_and(|(stem, _)| stem == wanted)
    }
}

/// The set of discovered models; rescanned after pulls and deletes, and when a lookup misses.
pub struct Registry {
    dir: PathBuf,
    catalog: Catalog,
    config: Config,
    /// Found by the last scan of `dir`.
    entries: RwLock<Vec<Arc<ModelEntry>>>,
    /// Added at run time; kept across rescans, looked up first.
    added: RwLock<Vec<Arc<ModelEntry>>>,
}

impl Registry {
    pub fn new(dir: PathBuf, catalog: Catalog, config: Config) -> Self {
        let r = Self { dir, catalog, config, entries: RwLock::new(Vec::new()), added: RwLock::new(Vec::new()) };
        r.rescan();
        r
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every model: those added at run time, then those scanned.
    pub fn list(&self) -> Vec<Arc<ModelEntry>> {
        let mut v = self.added.read().unwrap_or_else(|e| e.into_inner()).clone();
        v.extend(self.entries.read().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        v
    }

    /// Adds (or replaces, by name) a model that is not a file of the models directory.
    pub fn insert(&self, entry: ModelEntry) -> Arc<ModelEntry> {
        let entry = Arc::new(entry);
        let mut added = self.added.write().unwrap_or_else(|e| e.into_inner());
        added.retain(|e| e.name != entry.name);
        added.push(Arc::clone(&entry));
        entry
    }

    /// Removes a model added with [`insert`](Self::insert); whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        let mut added = self.added.write().unwrap_or_else(|e| e.into_inner());
        let before = added.len();
        added.retain(|e| e.name != name);
        added.len() != before
    }

    /// Finds a model by any of its names; rescans once on a miss (a file may have been copied in).
    pub fn lookup(&self, name: &str) -> Option<Arc<ModelEntry>> {
        let wanted = name.strip_suffix(":latest").unwrap_or(name);
        let find = || self.list().into_iter().find(|e| e.matches(wanted));
        find().or_else(|| {
            self.rescan();
            find()
        })
    }

    pub fn rescan(&self) {
        let found = scan(&self.dir, &self.catalog, &self.config);
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = found.into_iter().map(Arc::new).collect();
    }
}

fn scan(dir: &Path, catalog: &Catalog, config: &Config) -> Vec<ModelEntry> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| Format::from_path(p).is_some()).collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read models dir");
            Vec::new()
        }
    };
    files.sort();
    let mut named: Vec<(PathBuf, String)> =
        files.into_iter().filter_map(|p| Some((p.clone(), p.file_name()?.to_string_lossy().into_owned()))).collect();
    // Pulled models: blobs named in the store's index by the file name they were pulled as.
    let blobs = dir.join("blobs");
    for (file_name, e) in crate::store::Index::read(dir).files {
        named.push((blobs.join(format!("sha256-{}", e.sha256)), file_name));
    }
    let mut out: Vec<ModelEntry> = Vec::new();
    for (path, file_name) in named {
        let Some(mut e) = describe(&path, &file_name, catalog, config) else { continue };
        if out.iter().any(|o| o.name == e.name) {
            // Two files with one friendly name (say, two quantisations): the second keeps its stem.
            e.name = e.file_name.rsplit_once('.').map_or(e.file_name.clone(), |(s, _)| s.to_ascii_lowercase());
        }
        out.push(e);
    }
    out
}

/// Everything known about one file, known as `file_name` (its own name, or for a blob the name
/// it was pulled or assigned as); `None` for unreadable files (logged).
pub fn describe(path: &Path, file_name: &str, catalog: &Catalog, config: &Config) -> Option<ModelEntry> {
    let format = Format::from_path(Path::new(file_name))?;
    let md = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let file_name = file_name.to_owned();
    // A blob is named by its digest.
    let blob_sha = path
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("sha256-").map(str::to_owned))
        .filter(|s| crate::store::valid_sha(s));
    let parsed = names::parse_file_name(&file_name);
    let meta = match format {
        Format::Gguf => match GgufMeta::read(path) {
            Some(m) => m,
            None => {
                tracing::warn!(file = %path.display(), "not a readable GGUF file; skipped");
                return None;
            }
        },
        Format::Rkllm => GgufMeta::default(),
    };
    let cat = catalog.by_file(&file_name);
    let name = cat.map_or(parsed.name.clone(), |(m, _)| m.name.clone());
    let settings = config.effective(&name);
    let family = meta.architecture.clone().or_else(|| cat.and_then(|(m, _)| m.family.clone()));
    let capabilities = Capabilities::of(format, &meta, &settings, family.as_deref(), &[&file_name, &name]);
    let mut aliases: Vec<String> = cat.map(|(m, _)| m.aliases.clone()).unwrap_or_default();
    aliases.extend(settings.aliases.iter().cloned());
    let context_max = parsed.context.or(meta.context_length).or(cat.and_then(|(m, _)| m.context));
    let context = settings
        .context
        .unwrap_or_else(|| context_max.map_or(names::DEFAULT_CONTEXT, |m| m.min(names::DEFAULT_CONTEXT)));
    // Pinned by the catalog for this exact size, else cached beside the file (never computed
    // here: a scan must stay cheap; `Library::fill_digests` hashes in the background).
    let sha256 = blob_sha.or_else(|| {
        cat.filter(|(_, f)| f.size == Some(md.len()))
            .and_then(|(_, f)| f.known_sha256().map(str::to_owned))
            .or_else(|| digest::cached(path))
    });
    Some(ModelEntry {
        name,
        aliases,
        file_name,
        path: path.to_path_buf(),
        format,
        size: md.len(),
        modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        context,
        context_max,
        family,
        parameter_size: meta.size_label.clone().or_else(|| cat.and_then(|(m, _)| m.parameters.clone())),
        quantization: meta
            .quantization()
            .map(str::to_owned)
            .or_else(|| parsed.quant.as_ref().map(|q| q.to_ascii_uppercase())),
        license: cat.and_then(|(m, _)| m.license.clone()).or_else(|| meta.license.clone()),
        sha256,
        meta,
        settings,
        capabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store blob (cluster assignment, `/api/pull`) is described by the name it came as, and
    /// an assignment's served name and aliases count too: a `.rkllm` blob still thinks.
    #[test]
    fn a_blob_is_known_by_its_source_and_served_names() {
        let dir = std::env::temp_dir().join(format!("rl-models-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        let blob = dir.join("blobs").join(format!("sha256-{}", "ab".repeat(32)));
        std::fs::write(&blob, b"RKLLM-SIM\n").unwrap();
        let (catalog, config) = (Catalog::parse(catalog::EMBEDDED).unwrap(), Config::default());
        let e = describe(&blob, "Qwen3-0.6B-sim_w8a8_rk3588.rkllm", &catalog, &config).unwrap();
        assert!(e.capabilities.thinking, "from the source's file name");
        let e = describe(&blob, "model.rkllm", &catalog, &config).unwrap();
        assert!(!e.capabilities.thinking && e.family.is_none());
        let e = e.assigned("assistant", &["qwen3:0.6b".into()], config.effective("assistant"), &catalog);
        assert!(e.capabilities.thinking, "from an alias");
        assert_eq!(e.family.as_deref(), Some("qwen3"), "the catalog entry the alias names");
        assert_eq!(e.known_as(), ["model.rkllm", "assistant", "qwen3:0.6b"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
