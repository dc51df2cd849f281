//! An HTTP server for many LoRA-XS adapters on one base model (an encoder,
//! or a Llama-family decoder).
//!
//! Every LoRA-XS adapter of one base model and rank shares `A` and `B` and
//! differs only in its `r × r` matrices, so the server keeps one base model
//! and a bank of adapters ([`loraxs::AdapterBank`]) and runs a batch whose
//! rows each name their own adapter in one encoder pass: a thousand
//! adapters cost about what one does. Requests that arrive within a few
//! milliseconds of each other are batched together, whatever adapters they
//! name.
//!
//! Routes (JSON in and out; errors as `{"error": {"message", "type",
//! "param", "code"}}`):
//!
//! | route | does |
//! |---|---|
//! | `POST /v1/classify` | `{"adapter", "inputs": [text or [text, text]], "truncate"?}` → per input `{"label", "probabilities"}` or `{"score"}` from the adapter's head |
//! | `POST /v1/embeddings` | OpenAI's shape; `model` names the adapter (`"base"` or absent: none); mean-pooled, L2-normalised |
//! | `POST /v1/completions`, `POST /v1/chat/completions` | decoders: OpenAI's shape, `model` names the adapter; greedy requests batched across adapters |
//! | `GET /v1/adapters` | the base, the loaded adapters, the files not loaded and why |
//! | `POST /v1/adapters` | `{"path", "name"?}`: load a file of the adapter folder (201) |
//! | `DELETE /v1/adapters/{name}` | unload one |
//! | `GET /health`, `GET /metrics` | liveness; Prometheus text |
//!
//! Statuses: malformed JSON or fields 400, unknown adapter or route 404,
//! a name taken 409, an adapter of another base, rank or method (or one
//! without a head asked to classify) 422, an input over the token limit,
//! too many inputs or too large a body 413, a full queue 503 (with
//! `Retry-After`). A panic inside the model answers that batch 500 and the
//! server serves on. Shutdown finishes every accepted request.
//!
//! ```
//! use std::path::Path;
//! use loraxs_serve::{Server, ServeConfig, load::Client};
//!
//! // A tiny random BERT shipped with the tests; any BERT/RoBERTa folder works.
//! let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
//! let server = Server::start::<burn::backend::Flex>(ServeConfig::new(model)).unwrap();
//! assert_eq!(server.loaded.base.rank, 16); // no adapter files: the default rank
//!
//! let runtime = tokio::runtime::Runtime::new().unwrap();
//! runtime.block_on(async {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let serving = tokio::spawn(server.serve(listener, async { stopped.await.ok(); }));
//!
//!     let mut client = Client::new(addr).unwrap();
//!     let r = client
//!         .request("POST", "/v1/embeddings", Some(r#"{"input": ["a good movie", "the cat sat"]}"#))
//!         .await
//!         .unwrap();
//!     assert_eq!(r.status, 200);
//!     assert_eq!(r.json()["data"][1]["embedding"].as_array().unwrap().len(), 32);
//!
//!     let r = client.request("POST", "/v1/classify", Some(r#"{"adapter": "sst2", "inputs": ["fun"]}"#)).await.unwrap();
//!     assert_eq!(r.status, 404);
//!     assert_eq!(r.json()["error"]["param"], "adapter");
//!
//!     stop.send(()).unwrap();
//!     serving.await.unwrap().unwrap();
//! });
//! ```

#![warn(missing_docs)]

pub mod api;
mod decoder;
mod engine;
pub mod load;
pub mod metrics;
mod server;
mod stream;

pub use decoder::DEFAULT_DECODER_RANK;
pub use engine::DEFAULT_RANK;
pub use server::{ServeConfig, Server, StartError};
