//! Tokenisation for decoder LLMs: text to ids without added special tokens
//! (chat templates write them), ids back to text, the stop tokens, and the
//! model's Jinja chat template (rendered with `minijinja`, the engine
//! Hugging Face's Rust tools use).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use tokenizers::Tokenizer;

use crate::{Result, TokenizerError};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special tokens a decoder's tokenizer names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence, when the model has one.
    pub bos: Option<String>,
    /// End of sequence (the first stop token).
    pub eos: Option<String>,
    /// Padding; the end-of-sequence token when absent.
    pub pad: Option<String>,
    /// Further stop tokens (e.g. `<|im_end|>` or `<|eot_id|>`).
    pub extra_stops: Vec<String>,
}

/// A decoder's tokenizer with its special tokens and chat template.
pub struct CausalTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    specials: SpecialTokens,
    stop_ids: Vec<u32>,
    pad_id: u32,
    chat_template: Option<String>,
    add_bos: bool,
}

impl std::fmt::Debug for CausalTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalTokenizer")
            .field("source", &self.source)
            .field("specials", &self.specials)
            .field("chat_template", &self.chat_template.is_some())
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl CausalTokenizer {
    /// A tokenizer from `tokenizer.json` text; `source` names it in errors.
    /// Every special token named must be in the vocabulary.
    pub fn from_json(
        json: &str,
        source: &Path,
        specials: SpecialTokens,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let fail = |reason: String| TokenizerError::Tokenizer {
            path: source.into(),
            reason,
        };
        let inner = Tokenizer::from_str(json).map_err(|e| fail(e.to_string()))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| fail(format!("special token `{t}` is not in the vocabulary")))
        };
        let mut stop_ids = Vec::new();
        for t in specials.eos.iter().chain(&specials.extra_stops) {
            let i = id(t)?;
            if !stop_ids.contains(&i) {
                stop_ids.push(i);
            }
        }
        if let Some(b) = &specials.bos {
            id(b)?;
        }
        let pad_id = match specials.pad.as_ref().or(specials.eos.as_ref()) {
            Some(p) => id(p)?,
            None => 0,
        };
        Ok(Self {
            inner,
            source: source.into(),
            specials,
            stop_ids,
            pad_id,
            chat_template,
            add_bos: false,
        })
    }

    /// Whether prompts start with the beginning-of-sequence token
    /// ([`CausalTokenizer::encode_prompt`]); off unless set. Llama and
    /// Mistral tokenizers set it (`add_bos_token` in
    /// `tokenizer_config.json`, `tokenizer.ggml.add_bos_token` in GGUF).
    /// Fails when it is set and the tokenizer names no such token.
    pub fn with_add_bos(mut self, add_bos: bool) -> Result<Self> {
        if add_bos && self.bos_id().is_none() {
            return Err(TokenizerError::Tokenizer {
                path: self.source.clone(),
                reason: "prompts should start with a beginning-of-sequence token, but none is named".into(),
            });
        }
        self.add_bos = add_bos;
        Ok(self)
    }

    /// Whether [`CausalTokenizer::encode_prompt`] starts prompts with the
    /// beginning-of-sequence token.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The id of the beginning-of-sequence token, when one is named.
    pub fn bos_id(&self) -> Option<u32> {
        self.specials
            .bos
            .as_deref()
            .and_then(|t| self.inner.token_to_id(t))
    }

    /// A tokenizer from a `tokenizer.json` file.
    pub fn from_file(path: &Path, specials: SpecialTokens, chat_template: Option<String>) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_json(&json, path, specials, chat_template)
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The special tokens.
    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// Ids that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The padding id (the end-of-sequence token when none is named).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, when it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text`; special tokens written in it (`<|im_start|>`)
    /// are recognised, none are added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Input(format!("{}: cannot tokenise: {e}", self.source.display())))
    }

    /// Token ids of a prompt: [`CausalTokenizer::encode`], starting with
    /// the beginning-of-sequence token when the tokenizer adds one and the
    /// text (e.g. a chat template's output) does not already begin with it
    /// — what Hugging Face's tokenizers and llama.cpp feed the model.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if self.add_bos
            && let Some(bos) = self.bos_id()
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens left out when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Input(format!("{}: cannot decode: {e}", self.source.display())))
    }

    /// Whether the tokenizer has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The conversation as the model's chat template writes it, ending with
    /// the assistant's turn opened when `add_generation_prompt`. Fails when
    /// the tokenizer has no template (use plain prompts then) or the
    /// template does not render.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| TokenizerError::Tokenizer {
                path: self.source.clone(),
                reason: "no chat template (tokenizer_config.json `chat_template`, or GGUF \
                     `tokenizer.chat_template`); use plain prompts"
                    .into(),
            })?;
        render_chat(template, messages, add_generation_prompt, &self.specials).map_err(|reason| {
            TokenizerError::Tokenizer {
                path: self.source.clone(),
                reason,
            }
        })
    }
}

/// Renders a Hugging Face chat template: `messages`, `add_generation_prompt`,
/// `bos_token`, `eos_token` and `raise_exception` as transformers provides
/// them.
pub fn render_chat(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    specials: &SpecialTokens,
) -> std::result::Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| format!("chat template does not parse: {e}"))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => specials.bos.clone().unwrap_or_default(),
        eos_token => specials.eos.clone().unwrap_or_default(),
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("chat template failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}\
                            {% if add_generation_prompt %}<|assistant|>{% endif %}";

    #[test]
    fn chat_template_renders_messages_and_generation_prompt() {
        let specials = SpecialTokens {
            eos: Some("</s>".into()),
            ..Default::default()
        };
        let msgs = [
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello"),
        ];
        assert_eq!(
            render_chat(TEMPLATE, &msgs, true, &specials).unwrap(),
            "<|user|>Hi</s>\n<|assistant|>Hello</s>\n<|assistant|>"
        );
        let e = render_chat(
            "{{ raise_exception('roles must alternate') }}",
            &msgs,
            false,
            &specials,
        )
        .unwrap_err();
        assert!(e.contains("roles must alternate"), "{e}");
        let e = render_chat("{% for %}", &msgs, false, &specials).unwrap_err();
        assert!(e.starts_with("chat template does not parse"), "{e}");
    }
}
