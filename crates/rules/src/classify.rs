//! What an image is: database, model or other, the model type, and the Postgres
//! extensions it declares.
//!
//! The kind, in order of precedence:
//! 1. the rule's kind when it is `database` or `model` (the admin said so);
//! 2. for `auto`, an `io.imagelib.kind` annotation or label (`database`, `model` or
//!    `other`; annotation first) — the image author's explicit word;
//! 3. a model artifact type: CNCF ModelPack (`application/vnd.cncf.model.*`, e.g. the
//!    `…manifest.v1+json` artifact type or `…config.v1+json` config) or KitOps ModelKit
//!    (`application/vnd.kitops.modelkit.*`) → model;
//! 4. an NVIDIA NIM label or annotation (any key starting `com.nvidia.nim`) → model;
//! 5. Postgres: an `io.imagelib.postgres.extensions` annotation or label, or an
//!    `org.opencontainers.image.title`/`source` mentioning `postgres`, `postgis`,
//!    `timescale` or `cloudnative-pg` → database;
//! 6. otherwise other. A title or description alone never makes a model.
//!
//! The model type (only for models): an `io.imagelib.model.type` annotation or label
//! (annotation first), else keywords in the repository name, the NIM model name
//! (`com.nvidia.nim.model`) and the OCI title, matched against words (a keyword matches a
//! word that starts or ends with it, so `llama3` and `codellama` are llamas but `eclipse`
//! is no `clip`), most specific first: reranker (`rerank`), ocr (`ocr`), image-embedding
//! (`clip`, `siglip`, `image-embed`), text-embedding (`embed`, `embedding`), then
//! text-completion (`llm`, `instruct`, `chat`, `llama`, `mistral`, …).

use std::collections::BTreeMap;

use imagelib_events::RepositoryName;
use imagelib_events::model::{ImageKind, ModelType, PostgresExtension, RuleKind};

pub const KIND_KEY: &str = "io.imagelib.kind";
pub const MODEL_TYPE_KEY: &str = "io.imagelib.model.type";
pub const EXTENSIONS_KEY: &str = "io.imagelib.postgres.extensions";
pub const MODELPACK_ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MODELPACK_CONFIG_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
pub const MODELKIT_CONFIG_TYPE: &str = "application/vnd.kitops.modelkit.config.v1+json";

const MODEL_MEDIA_PREFIXES: [&str; 2] = [
    "application/vnd.cncf.model.",
    "application/vnd.kitops.modelkit.",
];
const POSTGRES_WORDS: [&str; 4] = ["postgres", "postgis", "timescale", "cloudnative-pg"];

/// Model-type keywords, most specific first.
const MODEL_KEYWORDS: [(ModelType, &[&str]); 5] = [
    (ModelType::Reranker, &["rerank", "reranker", "reranking"]),
    (ModelType::Ocr, &["ocr"]),
    (ModelType::ImageEmbedding, &["clip", "siglip"]),
    (
        ModelType::TextEmbedding,
        &["embed", "embedding", "embeddings"],
    ),
    (
        ModelType::TextCompletion,
        &[
            "llm", "instruct", "chat", "llama", "mistral", "mixtral", "gpt", "qwen", "gemma",
        ],
    ),
];

/// Classifies one image (see the module docs).
///
/// `artifact_type` is the manifest's `artifactType`, or, when it has none, its config
/// descriptor's media type (the OCI 1.1 rule for an artifact's type); `media_type` is the
/// manifest's media type; `repository` feeds the model-type heuristics.
pub fn classify(
    rule_kind: RuleKind,
    artifact_type: Option<&str>,
    media_type: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    repository: &RepositoryName,
) -> (ImageKind, Option<ModelType>) {
    let meta = Meta {
        labels,
        annotations,
    };
    let kind = match rule_kind {
        RuleKind::Database => ImageKind::Database,
        RuleKind::Model => ImageKind::Model,
        RuleKind::Auto => infer_kind(&meta, artifact_type, media_type),
    };
    let model_type = (kind == ImageKind::Model)
        .then(|| model_type(&meta, repository))
        .flatten();
    (kind, model_type)
}

struct Meta<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
}

impl Meta<'_> {
    /// The annotation, else the label.
    fn get(&self, key: &str) -> Option<&str> {
        self.annotations
            .get(key)
            .or_else(|| self.labels.get(key))
            .map(String::as_str)
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.annotations
            .keys()
            .chain(self.labels.keys())
            .map(String::as_str)
    }

    fn values_of<'k>(&'k self, key: &'k str) -> impl Iterator<Item = &'k str> {
        [self.annotations.get(key), self.labels.get(key)]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

fn infer_kind(meta: &Meta<'_>, artifact_type: Option<&str>, media_type: &str) -> ImageKind {
    if let Some(explicit) = meta.get(KIND_KEY) {
        match explicit.trim().to_ascii_lowercase().as_str() {
            "database" => return ImageKind::Database,
            "model" => return ImageKind::Model,
            "other" => return ImageKind::Other,
            _ => {}
        }
    }
    let is_model_type = |t: &str| MODEL_MEDIA_PREFIXES.iter().any(|p| t.starts_with(p));
    if artifact_type.is_some_and(is_model_type) || is_model_type(media_type) {
        return ImageKind::Model;
    }
    if meta.keys().any(|k| k.starts_with("com.nvidia.nim")) {
        return ImageKind::Model;
    }
    let mentions_postgres = [
        "org.opencontainers.image.title",
        "org.opencontainers.image.source",
    ]
    .iter()
    .flat_map(|k| meta.values_of(k))
    .any(|v| {
        let v = v.to_ascii_lowercase();
        POSTGRES_WORDS.iter().any(|w| v.contains(w))
    });
    if meta.get(EXTENSIONS_KEY).is_some() || mentions_postgres {
        return ImageKind::Database;
    }
    ImageKind::Other
}

fn model_type(meta: &Meta<'_>, repository: &RepositoryName) -> Option<ModelType> {
    if let Some(explicit) = meta.get(MODEL_TYPE_KEY)
        && let Ok(t) = explicit
            .trim()
            .to_ascii_lowercase()
            .replace('_', "-")
            .parse()
    {
        return Some(t);
    }
    let mut hints = repository.as_str().to_ascii_lowercase();
    for key in ["com.nvidia.nim.model", "org.opencontainers.image.title"] {
        if let Some(v) = meta.get(key) {
            hints.push(' ');
            hints.push_str(&v.to_ascii_lowercase());
        }
    }
    model_type_from_hints(&hints)
}

/// The model type keywords in `hints` suggest (see the module docs), if any.
pub fn model_type_from_hints(hints: &str) -> Option<ModelType> {
    let lower = hints.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |keyword: &str| {
        words
            .iter()
            .any(|w| w.starts_with(keyword) || w.ends_with(keyword))
    };
    let image_embed = words
        .windows(2)
        .any(|p| p[0] == "image" && p[1].starts_with("embed"))
        || words.iter().any(|w| w.starts_with("imageembed"));
    MODEL_KEYWORDS.iter().find_map(|(t, keywords)| {
        let hit =
            keywords.iter().any(|k| has(k)) || (*t == ModelType::ImageEmbedding && image_embed);
        hit.then_some(*t)
    })
}

/// The Postgres extensions an image declares in its `io.imagelib.postgres.extensions`
/// annotation or label (the annotation wins): a JSON list of
/// `{"name": …, "version"?: …, "description"?: …}`. No annotation or label: an empty list.
/// A malformed value is an error saying what is wrong; callers record it and go on.
pub fn parse_extensions(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<PostgresExtension>, String> {
    let (source, raw) = match (annotations.get(EXTENSIONS_KEY), labels.get(EXTENSIONS_KEY)) {
        (Some(a), _) => ("annotation", a),
        (None, Some(l)) => ("label", l),
        (None, None) => return Ok(vec![]),
    };
    let invalid = |why: String| {
        format!(
            "{source} `{EXTENSIONS_KEY}` is not a JSON list of {{\"name\", \"version\"?, \
             \"description\"?}} objects: {why}"
        )
    };
    let extensions: Vec<PostgresExtension> =
        serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?;
    for (i, ext) in extensions.iter().enumerate() {
        if ext.name.trim().is_empty() {
            return Err(invalid(format!("entry {i} has an empty name")));
        }
    }
    Ok(extensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn repo(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn auto(
        artifact_type: Option<&str>,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        repository: &str,
    ) -> (ImageKind, Option<ModelType>) {
        classify(
            RuleKind::Auto,
            artifact_type,
            OCI_MANIFEST,
            &map(labels),
            &map(annotations),
            &repo(repository),
        )
    }

    #[test]
    fn rule_kind_wins() {
        let labels = map(&[(KIND_KEY, "model")]);
        let (kind, t) = classify(
            RuleKind::Database,
            Some(MODELPACK_ARTIFACT_TYPE),
            OCI_MANIFEST,
            &labels,
            &BTreeMap::new(),
            &repo("x"),
        );
        assert_eq!((kind, t), (ImageKind::Database, None));
        let (kind, t) = classify(
            RuleKind::Model,
            None,
            OCI_MANIFEST,
            &map(&[(KIND_KEY, "database")]),
            &BTreeMap::new(),
            &repo("nvidia/nim/nv-embedqa-e5-v5"),
        );
        assert_eq!(
            (kind, t),
            (ImageKind::Model, Some(ModelType::TextEmbedding))
        );
    }

    #[test]
    fn modelpack_artifact() {
        assert_eq!(
            auto(Some(MODELPACK_ARTIFACT_TYPE), &[], &[], "models/x").0,
            ImageKind::Model
        );
        assert_eq!(
            auto(Some(MODELPACK_CONFIG_TYPE), &[], &[], "models/x").0,
            ImageKind::Model
        );
        assert_eq!(
            classify(
                RuleKind::Auto,
                None,
                MODELPACK_ARTIFACT_TYPE,
                &BTreeMap::new(),
                &BTreeMap::new(),
                &repo("m")
            )
            .0,
            ImageKind::Model
        );
    }

    #[test]
    fn kitops_modelkit() {
        assert_eq!(
            auto(
                Some(MODELKIT_CONFIG_TYPE),
                &[],
                &[],
                "kit/llama3-8b-instruct"
            ),
            (ImageKind::Model, Some(ModelType::TextCompletion))
        );
        assert_eq!(
            auto(
                Some("application/vnd.kitops.modelkit.manifest.v1+json"),
                &[],
                &[],
                "k"
            )
            .0,
            ImageKind::Model
        );
    }

    #[test]
    fn nim_labels_and_annotations() {
        assert_eq!(
            auto(
                None,
                &[("com.nvidia.nim.model", "meta/llama-3.1-8b-instruct")],
                &[],
                "nim/a"
            ),
            (ImageKind::Model, Some(ModelType::TextCompletion))
        );
        assert_eq!(
            auto(
                None,
                &[],
                &[("com.nvidia.nim.version", "1.0.3")],
                "nvidia/nim/nv-rerankqa-mistral-4b"
            )
            .1,
            Some(ModelType::Reranker),
            "rerank wins over mistral"
        );
        assert_eq!(
            auto(None, &[("com.nvidia.nim.anything", "x")], &[], "a").0,
            ImageKind::Model
        );
        assert_eq!(
            auto(None, &[("com.nvidia.other", "x")], &[], "a").0,
            ImageKind::Other
        );
    }

    #[test]
    fn titles_alone_do_not_make_a_model() {
        assert_eq!(
            auto(
                None,
                &[
                    ("org.opencontainers.image.title", "Llama 3 instruct model"),
                    ("org.opencontainers.image.description", "an LLM")
                ],
                &[],
                "llama"
            ),
            (ImageKind::Other, None)
        );
    }

    #[test]
    fn postgres_images() {
        assert_eq!(
            auto(None, &[], &[(EXTENSIONS_KEY, "[]")], "custom").0,
            ImageKind::Database
        );
        assert_eq!(
            auto(None, &[(EXTENSIONS_KEY, "garbage")], &[], "c").0,
            ImageKind::Database
        );
        for (key, value) in [
            ("org.opencontainers.image.title", "PostgreSQL 16"),
            (
                "org.opencontainers.image.source",
                "https://github.com/cloudnative-pg/postgres-containers",
            ),
            (
                "org.opencontainers.image.source",
                "https://github.com/postgis/docker-postgis",
            ),
            ("org.opencontainers.image.title", "TimescaleDB HA"),
        ] {
            assert_eq!(
                auto(None, &[(key, value)], &[], "x").0,
                ImageKind::Database,
                "{value}"
            );
            assert_eq!(
                auto(None, &[], &[(key, value)], "x").0,
                ImageKind::Database,
                "{value}"
            );
        }
        assert_eq!(
            auto(
                None,
                &[("org.opencontainers.image.description", "for postgres")],
                &[],
                "x"
            )
            .0,
            ImageKind::Other
        );
    }

    #[test]
    fn explicit_kind_overrides_inference() {
        assert_eq!(
            auto(
                Some(MODELPACK_ARTIFACT_TYPE),
                &[],
                &[(KIND_KEY, "database")],
                "m"
            )
            .0,
            ImageKind::Database
        );
        assert_eq!(
            auto(
                None,
                &[(KIND_KEY, "Model"), (MODEL_TYPE_KEY, "ocr")],
                &[],
                "x"
            ),
            (ImageKind::Model, Some(ModelType::Ocr))
        );
        assert_eq!(
            auto(
                None,
                &[("org.opencontainers.image.title", "postgres")],
                &[(KIND_KEY, "other")],
                "x"
            )
            .0,
            ImageKind::Other
        );
        assert_eq!(
            auto(None, &[(KIND_KEY, "database")], &[(KIND_KEY, "model")], "x").0,
            ImageKind::Model,
            "the annotation wins over the label"
        );
        assert_eq!(
            auto(
                None,
                &[(KIND_KEY, "banana"), ("com.nvidia.nim.model", "x")],
                &[],
                "x"
            )
            .0,
            ImageKind::Model,
            "an unknown value is ignored"
        );
    }

    #[test]
    fn model_type_annotation_then_heuristics() {
        let model = |labels: &[(&str, &str)], annotations: &[(&str, &str)], repository: &str| {
            classify(
                RuleKind::Model,
                None,
                OCI_MANIFEST,
                &map(labels),
                &map(annotations),
                &repo(repository),
            )
            .1
        };
        assert_eq!(
            model(
                &[(MODEL_TYPE_KEY, "text-completion")],
                &[(MODEL_TYPE_KEY, "image_embedding")],
                "x"
            ),
            Some(ModelType::ImageEmbedding)
        );
        assert_eq!(
            model(&[(MODEL_TYPE_KEY, "nonsense")], &[], "nv-embedqa"),
            Some(ModelType::TextEmbedding)
        );
        assert_eq!(
            model(
                &[("org.opencontainers.image.title", "NV-CLIP")],
                &[],
                "models/a"
            ),
            Some(ModelType::ImageEmbedding)
        );
        assert_eq!(model(&[], &[], "models/unknown"), None);
    }

    #[test]
    fn model_type_keywords() {
        let cases = [
            (
                "nvidia/nim/nv-embedqa-e5-v5",
                Some(ModelType::TextEmbedding),
            ),
            ("baai/bge-embedding", Some(ModelType::TextEmbedding)),
            (
                "nvidia/nim/llama-3.2-nv-rerankqa-1b-v2",
                Some(ModelType::Reranker),
            ),
            ("nemoretriever-ocr", Some(ModelType::Ocr)),
            ("paddleocr", Some(ModelType::Ocr)),
            ("nvidia/nim/nvclip", Some(ModelType::ImageEmbedding)),
            ("google/siglip2-base", Some(ModelType::ImageEmbedding)),
            ("acme/image-embed-v1", Some(ModelType::ImageEmbedding)),
            (
                "meta/llama-3.1-8b-instruct",
                Some(ModelType::TextCompletion),
            ),
            ("mistralai/mistral-7b", Some(ModelType::TextCompletion)),
            ("nvidia/nim/llm", Some(ModelType::TextCompletion)),
            ("acme/chatbot", Some(ModelType::TextCompletion)),
            ("acme/codellama", Some(ModelType::TextCompletion)),
            ("acme/eclipse", None),
            ("acme/whisper", None),
        ];
        for (hints, expected) in cases {
            assert_eq!(model_type_from_hints(hints), expected, "{hints}");
        }
    }

    #[test]
    fn extensions_valid() {
        let annotations = map(&[(
            EXTENSIONS_KEY,
            r#"[{"name": "postgis", "version": "3.4.2", "description": "spatial"}, {"name": "vector"}]"#,
        )]);
        let ext = parse_extensions(&BTreeMap::new(), &annotations).unwrap();
        assert_eq!(
            ext,
            vec![
                PostgresExtension {
                    name: "postgis".into(),
                    version: Some("3.4.2".into()),
                    description: Some("spatial".into())
                },
                PostgresExtension {
                    name: "vector".into(),
                    version: None,
                    description: None
                },
            ]
        );
        let labels = map(&[(EXTENSIONS_KEY, r#"[{"name": "timescaledb"}]"#)]);
        assert_eq!(
            parse_extensions(&labels, &BTreeMap::new()).unwrap()[0].name,
            "timescaledb"
        );
        assert!(
            parse_extensions(&BTreeMap::new(), &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn extensions_annotation_wins() {
        let labels = map(&[(EXTENSIONS_KEY, r#"[{"name": "from-label"}]"#)]);
        let annotations = map(&[(EXTENSIONS_KEY, r#"[{"name": "from-annotation"}]"#)]);
        let ext = parse_extensions(&labels, &annotations).unwrap();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].name, "from-annotation");
        let bad_annotation = map(&[(EXTENSIONS_KEY, "nope")]);
        assert!(
            parse_extensions(&labels, &bad_annotation).is_err(),
            "a malformed annotation is reported, not replaced by the label"
        );
    }

    #[test]
    fn extensions_malformed() {
        for (raw, needle) in [
            ("postgis,vector", "expected value"),
            (r#"{"name": "postgis"}"#, "expected a sequence"),
            (r#"[{"version": "1"}]"#, "missing field `name`"),
            (r#"[{"name": "x", "version": 3.4}]"#, "invalid type"),
            (r#"[{"name": " "}]"#, "entry 0 has an empty name"),
        ] {
            let e = parse_extensions(&map(&[(EXTENSIONS_KEY, raw)]), &BTreeMap::new()).unwrap_err();
            assert!(
                e.starts_with("label `io.imagelib.postgres.extensions`"),
                "{e}"
            );
            assert!(e.contains(needle), "{raw}: {e}");
        }
    }
}
