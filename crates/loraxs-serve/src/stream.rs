//! Streamed completions: server-sent events in OpenAI's shape.
//!
//! The model thread passes each token of a streamed request on as it is
//! generated (`decoder::TokenStream`); a task per request decodes each
//! prompt's tokens so far and sends the new text as a chunk. Text that
//! could still turn into a stop text, or that ends in an incomplete UTF-8
//! character, is held back until it is decided, so the chunks joined are
//! exactly the text the same request answers unstreamed. A stop text ends
//! its prompt's generation at once (a batch whose rows have all ended
//! stops; a row that ended idles until then); a
//! client that goes away ends every prompt of its request.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::api::ApiError;
use crate::decoder::TokenStream;

/// The part of `text` that can be sent now, given what was `sent` already
/// and the request's `stop` texts: `(new text, whether a stop text was
/// reached)`. Held back: a tail that is the beginning of a stop text, and
/// (unless `last`) a tail of U+FFFD, which is how an incomplete UTF-8
/// character decodes. At a stop text the text before it is released and
/// nothing after it ever is.
pub(crate) fn stream_delta(text: &str, sent: &str, stop: &[String], last: bool) -> (String, bool) {
    let after = |end: usize| -> String {
        // Decoding is prefix-stable for byte-level tokenizers; where it is
        // not, wait until the text agrees with what was sent again.
        if end > sent.len() && text.is_char_boundary(end) && text[..end].starts_with(sent) {
            text[sent.len()..end].to_string()
        } else {
            String::new()
        }
    };
    if let Some(cut) = stop.iter().filter_map(|s| text.find(s.as_str())).min() {
        return (after(cut), true);
    }
    if last {
        return (after(text.len()), false);
    }
    let mut end = text.trim_end_matches('\u{FFFD}').len();
    // The longest tail of text[..end] that begins some stop text.
    let held = stop
        .iter()
        .flat_map(|s| {
            s.char_indices()
                .skip(1)
                .map(|(i, _)| &s[..i])
                .filter(|prefix| text[..end].ends_with(prefix))
                .map(str::len)
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0);
    end -= held;
    (after(end), false)
}

/// OpenAI's `finish_reason` for how a sequence ended.
pub(crate) fn finish_reason(finish: loraxs_models::FinishReason, stopped_by_text: bool) -> &'static str {
    match finish {
        _ if stopped_by_text => "stop",
        loraxs_models::FinishReason::Stop | loraxs_models::FinishReason::Cancelled => "stop",
        loraxs_models::FinishReason::Length => "length",
    }
}

/// The shape of the chunks: `/v1/completions` or `/v1/chat/completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `text_completion` chunks, `choices[].text`.
    Completion,
    /// `chat.completion.chunk` chunks, `choices[].delta`.
    Chat,
}

/// Everything a streamed answer needs besides the tokens.
pub(crate) struct StreamSpec {
    /// `id` of every chunk.
    pub(crate) id: String,
    /// `created` of every chunk.
    pub(crate) created: u64,
    /// `model` of every chunk (the adapter, or `base`).
    pub(crate) model: String,
    /// The chunk shape.
    pub(crate) kind: Kind,
    /// Stop texts.
    pub(crate) stop: Vec<String>,
    /// Tokens of the prompts (for the usage chunk).
    pub(crate) prompt_tokens: usize,
    /// Send a usage chunk at the end.
    pub(crate) include_usage: bool,
}

impl StreamSpec {
    fn chunk(&self, index: usize, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": index, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish,
            }),
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        self.envelope(json!([choice]))
    }

    fn envelope(&self, choices: Value) -> Value {
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices,
        })
    }
}

/// The SSE response for a streamed job already queued: `tokens` and
/// `stop` are the job's [`TokenStream`] ends, `answer` its reply.
pub(crate) fn respond(
    spec: StreamSpec,
    decode: impl Fn(&[u32]) -> Result<String, String> + Send + 'static,
    mut tokens: mpsc::UnboundedReceiver<(usize, u32)>,
    stop: Arc<[AtomicBool]>,
    answer: oneshot::Receiver<Result<loraxs_models::Generated, ApiError>>,
) -> Response {
    let (events, out) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let n = stop.len();
        let mut got: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut sent = vec![String::new(); n];
        let mut stopped = vec![false; n];
        let mut gone = false;
        let send = |value: Value, gone: &mut bool| {
            if !*gone && events.send(Event::default().data(value.to_string())).is_err() {
                // The client went away: end every prompt.
                *gone = true;
                stop.iter().for_each(|s| s.store(true, Ordering::Relaxed));
            }
        };
        if spec.kind == Kind::Chat {
            send(spec.chunk(0, Some(""), None, true), &mut gone);
        }
        // Until the model thread drops the job (it has answered by then).
        while let Some((k, token)) = tokens.recv().await {
            if stopped[k] {
                continue;
            }
            got[k].push(token);
            let Ok(text) = decode(&got[k]) else { continue };
            let (delta, hit) = stream_delta(&text, &sent[k], &spec.stop, false);
            if hit {
                stopped[k] = true;
                stop[k].store(true, Ordering::Relaxed);
            }
            if !delta.is_empty() {
                sent[k].push_str(&delta);
                send(spec.chunk(k, Some(&delta), None, false), &mut gone);
            }
        }
        match answer.await {
            Ok(Ok(generated)) => {
                let mut completion_tokens = 0;
                for (k, (tokens, finish)) in generated.tokens.iter().zip(&generated.finish).enumerate() {
                    completion_tokens += tokens.len();
                    let mut hit = stopped[k];
                    if !hit {
                        match decode(tokens) {
                            Ok(text) => {
                                let (delta, h) = stream_delta(&text, &sent[k], &spec.stop, true);
                                hit = h;
                                if !delta.is_empty() {
                                    send(spec.chunk(k, Some(&delta), None, false), &mut gone);
                                }
                            }
                            Err(e) => {
                                send(
                                    json!({"error": {"message": e, "type": "server_error"}}),
                                    &mut gone,
                                );
                            }
                        }
                    }
                    let reason = finish_reason(*finish, hit);
                    send(spec.chunk(k, None, Some(reason), false), &mut gone);
                }
                if spec.include_usage {
                    let mut usage = spec.envelope(json!([]));
                    usage["usage"] = json!({
                        "prompt_tokens": spec.prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": spec.prompt_tokens + completion_tokens,
                    });
                    send(usage, &mut gone);
                }
            }
            Ok(Err(e)) => send(e.body(), &mut gone),
            Err(_) => send(
                ApiError::internal("the model thread stopped before answering").body(),
                &mut gone,
            ),
        }
        if !gone {
            let _ = events.send(Event::default().data("[DONE]"));
        }
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|e| (Ok::<_, Infallible>(e), out))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// A job's [`TokenStream`] and the ends [`respond`] reads.
pub(crate) fn token_stream(
    prompts: usize,
) -> (
    TokenStream,
    mpsc::UnboundedReceiver<(usize, u32)>,
    Arc<[AtomicBool]>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop: Arc<[AtomicBool]> = (0..prompts).map(|_| AtomicBool::new(false)).collect();
    (
        TokenStream {
            tokens: tx,
            stop: stop.clone(),
        },
        rx,
        stop,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_is_released_once_it_cannot_become_a_stop_text() {
        let stop = stops(&["\n\n", "END"]);
        // Nothing to hold back.
        assert_eq!(stream_delta("Hello", "", &stop, false), ("Hello".into(), false));
        // "E" and "EN" may begin "END"; a single "\n" may begin "\n\n".
        assert_eq!(
            stream_delta("Hello E", "", &stop, false),
            ("Hello ".into(), false)
        );
        assert_eq!(
            stream_delta("Hello EN", "Hello ", &stop, false),
            (String::new(), false)
        );
        assert_eq!(
            stream_delta("Hello ENV", "Hello ", &stop, false),
            ("ENV".into(), false)
        );
        assert_eq!(stream_delta("a\n", "", &stop, false), ("a".into(), false));
        // A stop text: what is before it, and the end.
        assert_eq!(
            stream_delta("Hello END more", "Hello ", &stop, false),
            (String::new(), true)
        );
        assert_eq!(stream_delta("a\n\nb", "a", &stop, false), (String::new(), true));
        assert_eq!(stream_delta("xy END", "x", &stop, false), ("y ".into(), true));
        // At the end a held tail is released: it never became a stop text.
        assert_eq!(
            stream_delta("Hello EN", "Hello ", &stop, true),
            ("EN".into(), false)
        );
    }

    #[test]
    fn incomplete_characters_wait_for_their_bytes() {
        // How a byte-level tokenizer decodes half of "é": U+FFFD.
        assert_eq!(stream_delta("caf\u{FFFD}", "", &[], false), ("caf".into(), false));
        assert_eq!(stream_delta("café", "caf", &[], false), ("é".into(), false));
        // A text that no longer starts with what was sent waits.
        assert_eq!(stream_delta("cab", "caf", &[], false), (String::new(), false));
    }

    #[test]
    fn joined_deltas_are_the_unstreamed_text() {
        let stop = stops(&["###"]);
        let full = "The answer is 42.\n## not yet\n### done";
        let mut sent = String::new();
        let mut hit = false;
        for end in (1..=full.len()).filter(|&e| full.is_char_boundary(e)) {
            let (delta, h) = stream_delta(&full[..end], &sent, &stop, false);
            sent.push_str(&delta);
            if h {
                hit = true;
                break;
            }
        }
        assert!(hit);
        assert_eq!(sent, &full[..full.find("###").unwrap()]);
    }
}
