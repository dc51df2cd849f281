//! The HTTP API's requests, responses and errors (JSON shapes).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The name that means "no adapter: the base model" wherever an adapter
/// is named; no adapter may take it.
pub const BASE_NAME: &str = "base";

/// An error answered to a client: an HTTP status and an OpenAI-style JSON
/// body `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault (`inputs[3]`, `adapter`), when one is.
    pub param: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
        }
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such adapter or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 413: the input is over a limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 422: well-formed but cannot be served (an adapter of another base,
    /// rank or method; an adapter without a head asked to classify).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 503: the queue is full or the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500: a fault of the server, not of the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The `type` field of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            404 => "not_found_error",
            409 => "conflict_error",
            413 => "request_too_large",
            422 => "unprocessable_error",
            503 => "overloaded_error",
            500..=599 => "internal_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.status.as_u16(),
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Maps an adapter error to the status a client should see: a file that
/// does not fit this server's base, rank or targets is 422, a name already
/// taken 409, an unknown name 404, a file that cannot be read or parsed 400.
pub fn adapter_error(e: &loraxs::AdapterError) -> ApiError {
    use loraxs::AdapterError as E;
    let status = match e {
        E::UnknownAdapter { .. } => StatusCode::NOT_FOUND,
        E::DuplicateAdapter { .. } => StatusCode::CONFLICT,
        E::Io { .. } | E::Corrupt { .. } | E::Metadata { .. } | E::Dtype { .. } | E::NonFinite { .. } => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.to_string())
}

/// One input of `/v1/classify`: a text or a text pair.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TextInput {
    /// A single text.
    Single(String),
    /// A text pair (`[first, second]`), e.g. for entailment or paraphrase.
    Pair(Vec<String>),
}

/// `POST /v1/classify`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// The adapter whose encoder update and head classify the inputs.
    pub adapter: String,
    /// Texts or text pairs.
    pub inputs: Vec<TextInput>,
    /// Truncate inputs longer than the server's token limit instead of
    /// answering 413.
    #[serde(default)]
    pub truncate: bool,
}

/// One result of `/v1/classify`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Classification {
    /// A classifier's answer: the most probable class and every class's
    /// probability (softmax of the logits).
    Label {
        /// Index of the most probable class.
        label: usize,
        /// Its name, when the adapter file records the head's label names
        /// (adapters trained by loraxs on GLUE do).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label_name: Option<String>,
        /// Probability of each class.
        probabilities: Vec<f32>,
    },
    /// A regressor's answer (one output, e.g. STS-B similarity).
    Score {
        /// The output.
        score: f32,
    },
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    /// Tokens fed to the model, special tokens included.
    pub prompt_tokens: usize,
    /// The same (nothing is generated).
    pub total_tokens: usize,
}

/// The answer to `/v1/classify`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ClassifyResponse {
    /// The adapter used.
    pub adapter: String,
    /// One result per input, in order.
    pub results: Vec<Classification>,
    /// Token counts.
    pub usage: Usage,
}

/// `input` of `/v1/embeddings`: one text or several.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

/// `POST /v1/embeddings` (OpenAI's shape).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingRequest {
    /// The adapter (`"base"` or absent: the base model).
    #[serde(default)]
    pub model: Option<String>,
    /// The texts.
    pub input: EmbeddingInput,
    /// Truncate long inputs instead of answering 413.
    #[serde(default)]
    pub truncate: bool,
    /// Only `"float"` is served.
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Embedding {
    /// Always `"embedding"`.
    pub object: String,
    /// Position of its text in the request.
    pub index: usize,
    /// Mean of the last hidden state over real tokens, L2-normalised (what
    /// sentence-transformers computes for all-MiniLM-L6-v2).
    pub embedding: Vec<f32>,
}

/// The answer to `/v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EmbeddingResponse {
    /// Always `"list"`.
    pub object: String,
    /// One embedding per text, in order.
    pub data: Vec<Embedding>,
    /// The adapter used (`"base"` for none).
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// `POST /v1/adapters`: load an adapter file from the server's adapter
/// folder.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadAdapterRequest {
    /// The file, relative to the adapter folder (`sst2.safetensors`,
    /// `run-key/adapter.safetensors`).
    pub path: String,
    /// The name to serve it under (default: the file's stem, or its
    /// folder's name for `…/adapter.safetensors`).
    #[serde(default)]
    pub name: Option<String>,
}

/// What the server knows about a loaded adapter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AdapterInfo {
    /// The name requests use.
    pub name: String,
    /// The file it came from.
    pub path: String,
    /// Its rank.
    pub rank: usize,
    /// Its alpha (the update is scaled by `alpha / rank`).
    pub alpha: f64,
    /// Trainable values of the adapter (`modules × r²`).
    pub adapter_values: usize,
    /// Bytes the adapter occupies in the bank (`f32`).
    pub bank_bytes: usize,
    /// Its head: the number of outputs (1: a regressor), or `None`.
    pub head_outputs: Option<usize>,
    /// The names of the head's outputs, when the file records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

/// A file in the adapter folder that is not served, and why.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NotLoaded {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The base model and the bank's shared settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BaseInfo {
    /// The model folder.
    pub model: String,
    /// Fingerprint of the base weights on the bank's targets.
    pub fingerprint: String,
    /// The rank every served adapter has.
    pub rank: usize,
    /// The targeted modules' patterns.
    pub targets: Vec<String>,
    /// Width of the encoder (length of an embedding).
    pub hidden_size: usize,
    /// Longest input in tokens.
    pub max_tokens: usize,
}

/// The answer to `GET /v1/adapters`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AdapterList {
    /// The base model.
    pub base: BaseInfo,
    /// Loaded adapters, by name.
    pub adapters: Vec<AdapterInfo>,
    /// Files found at start-up that are not served.
    pub not_loaded: Vec<NotLoaded>,
}

/// One text or several (`prompt`, `stop`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The texts.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(t) => vec![t.as_str()],
            OneOrMany::Many(t) => t.iter().map(String::as_str).collect(),
        }
    }
}

/// `POST /v1/completions` (OpenAI's shape).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// The adapter (`"base"` or absent: the base model).
    #[serde(default)]
    pub model: Option<String>,
    /// One prompt or several (one choice each).
    pub prompt: OneOrMany,
    /// Most tokens to generate (default 16).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// 0 for greedy decoding (default 1).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling (default 1).
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed of the sampler (default 0): the same request and seed give the
    /// same text.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Up to 4 texts that end the completion (not included).
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    /// Completions per prompt: only 1.
    #[serde(default)]
    pub n: Option<usize>,
    /// Stream the answer as server-sent events, a chunk per token or so,
    /// ended by `data: [DONE]` (OpenAI's streaming shape).
    #[serde(default)]
    pub stream: Option<bool>,
    /// With `stream`: `{"include_usage": true}` adds a last chunk with the
    /// token counts.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

/// `stream_options` of a completion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send the token counts in a last chunk (`choices` empty).
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessageIn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// `POST /v1/chat/completions` (OpenAI's shape).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The adapter (`"base"` or absent: the base model).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation, rendered with the model's chat template.
    pub messages: Vec<ChatMessageIn>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Most tokens to generate (default 16).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// 0 for greedy decoding (default 1).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling (default 1).
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Seed of the sampler (default 0): the same request and seed give the
    /// same text.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Up to 4 texts that end the completion (not included).
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    /// Completions per prompt: only 1.
    #[serde(default)]
    pub n: Option<usize>,
    /// Stream the answer as server-sent events, a chunk per token or so,
    /// ended by `data: [DONE]` (OpenAI's streaming shape).
    #[serde(default)]
    pub stream: Option<bool>,
    /// With `stream`: `{"include_usage": true}` adds a last chunk with the
    /// token counts.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}
