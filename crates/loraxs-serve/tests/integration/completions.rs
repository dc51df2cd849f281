//! loraxs-serve on a decoder, on loopback: OpenAI-shaped completions and
//! chat completions through the adapter bank. A small random Llama-family
//! decoder with SmolLM2's vocabulary, tokenizer and chat template (the
//! machinery under test does not depend on what the model knows); needs
//! SmolLM2's GGUF for the tokenizer (skipped locally without it, fails
//! under CI).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use burn::backend::Flex;
use loraxs::{AdapterConfig, RInit, SaveOptions, TargetModules, inject};
use loraxs_models::gguf::GgufFile;
use loraxs_models::{GenerationConfig, generate, load_causal_tokenizer, load_decoder};
use loraxs_serve::load::Client;
use loraxs_serve::{ServeConfig, Server};
use serde_json::json;

type B = Flex;

/// A tiny decoder folder with SmolLM2's tokenizer files, and two LoRA-XS
/// r=4 adapters of it (`a`, `b`) in an adapter folder.
fn setup() -> Option<(tempfile::TempDir, tempfile::TempDir)> {
    let gguf = loraxs_models::testing::test_decoder_gguf()?;
    let tokenizer = load_causal_tokenizer(&gguf).unwrap();
    let model = tempfile::tempdir().unwrap();
    loraxs_models::testing::write_tiny_decoder(model.path(), tokenizer.vocab_size(), 2, 11).unwrap();
    let file = GgufFile::open(&gguf).unwrap();
    std::fs::write(
        model.path().join("tokenizer.json"),
        loraxs_models::gguf_tokenizer_json(&file).unwrap(),
    )
    .unwrap();
    let specials = tokenizer.specials();
    let template = file
        .optional_str("tokenizer.chat_template")
        .unwrap()
        .map(str::to_string);
    std::fs::write(
        model.path().join("tokenizer_config.json"),
        json!({"bos_token": specials.bos, "eos_token": specials.eos, "pad_token": specials.pad,
               "chat_template": template})
        .to_string(),
    )
    .unwrap();
    let adapters = tempfile::tempdir().unwrap();
    let device = Default::default();
    for (name, seed) in [("a", 1), ("b", 2)] {
        let (decoder, _, _) = load_decoder::<B>(model.path(), &device).unwrap();
        let config = AdapterConfig::lora_xs(4)
            .with_alpha(4.0)
            .with_targets(TargetModules::paper_decoder())
            .with_seed(seed)
            .with_r_init(RInit::Gaussian { std: 2.0 });
        inject(decoder, &config)
            .unwrap()
            .save(
                adapters.path().join(format!("{name}.safetensors")),
                SaveOptions::default(),
            )
            .unwrap();
    }
    Some((model, adapters))
}

async fn start(
    model: &Path,
    adapters: &Path,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let mut config = ServeConfig::new(model).with_adapters(adapters);
    config.max_wait = Duration::from_millis(50);
    let server = tokio::task::spawn_blocking(move || Server::start::<B>(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.loaded.base.rank, 4);
    assert_eq!(server.loaded.adapters.len(), 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.serve(listener, async {
        stopped.await.ok();
    }));
    (addr, stop, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_route_each_request_through_its_adapter() {
    let Some((model, adapters)) = setup() else { return };
    let (addr, stop, done) = start(model.path(), adapters.path()).await;
    let prompt = "Natalia sold clips to 48 of her friends";
    let ask =
        |name: &str| json!({"model": name, "prompt": prompt, "max_tokens": 6, "temperature": 0}).to_string();

    // Concurrent greedy requests on a, b and the base share batches.
    let mut tasks = Vec::new();
    for name in ["a", "b", "base", "a"] {
        let mut client = Client::new(addr).unwrap();
        let body = ask(name);
        tasks.push(tokio::spawn(async move {
            (
                name,
                client
                    .request("POST", "/v1/completions", Some(&body))
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut texts = std::collections::BTreeMap::new();
    for task in tasks {
        let (name, r) = task.await.unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let body = r.json();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["model"], name);
        assert_eq!(body["usage"]["completion_tokens"], 6);
        let text = body["choices"][0]["text"].as_str().unwrap().to_string();
        if let Some(previous) = texts.insert(name, text.clone()) {
            assert_eq!(
                previous, text,
                "the same request answered differently in one batch"
            );
        }
    }
    assert_ne!(
        texts["a"], texts["b"],
        "two adapters gave the same text: {texts:?}"
    );
    // They were batched together: more distinct adapters than batches.
    let metrics = Client::new(addr)
        .unwrap()
        .request("GET", "/metrics", None)
        .await
        .unwrap()
        .body;
    let counter = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(
        counter("loraxs_batch_adapters_total") > counter("loraxs_batches_total"),
        "no batch mixed adapters:\n{metrics}"
    );
    assert_ne!(texts["a"], texts["base"]);

    // Each equals the adapter applied the ordinary way, alone.
    let device = Default::default();
    let tokenizer = load_causal_tokenizer(model.path()).unwrap();
    let ids = tokenizer.encode(prompt).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 6,
        stop_ids: tokenizer.stop_ids().to_vec(),
        ..Default::default()
    };
    for name in ["a", "b"] {
        let (decoder, _, _) = load_decoder::<B>(model.path(), &device).unwrap();
        let path = adapters.path().join(format!("{name}.safetensors"));
        let adapted = loraxs::AdapterFile::load(&path)
            .unwrap()
            .apply(decoder, &path)
            .unwrap()
            .model;
        let out = generate(
            &adapted,
            std::slice::from_ref(&ids),
            tokenizer.pad_id(),
            &config,
            &device,
        )
        .unwrap();
        assert_eq!(
            tokenizer.decode(&out.tokens[0], true).unwrap(),
            texts[name],
            "adapter {name}"
        );
    }

    // Sampling with a seed is reproducible.
    let mut client = Client::new(addr).unwrap();
    let sampled =
        json!({"model": "a", "prompt": prompt, "max_tokens": 5, "temperature": 1.0, "seed": 3}).to_string();
    let one = client
        .request("POST", "/v1/completions", Some(&sampled))
        .await
        .unwrap()
        .json();
    let two = client
        .request("POST", "/v1/completions", Some(&sampled))
        .await
        .unwrap()
        .json();
    assert_eq!(one["choices"], two["choices"]);

    // Chat: the template renders, the answer has OpenAI's shape.
    let chat = json!({"model": "b", "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                      "max_completion_tokens": 4, "temperature": 0})
    .to_string();
    let r = client
        .request("POST", "/v1/chat/completions", Some(&chat))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.json()["choices"][0]["message"]["role"], "assistant");
    assert!(r.json()["usage"]["prompt_tokens"].as_u64().unwrap() > 8);

    // A stop text cuts the answer before it.
    let first_word = texts["a"].split_whitespace().next().map(str::to_string);
    if let Some(word) = first_word.filter(|w| texts["a"].trim_start() != *w) {
        let body = json!({"model": "a", "prompt": prompt, "max_tokens": 6, "temperature": 0, "stop": [word.clone()]}).to_string();
        let r = client
            .request("POST", "/v1/completions", Some(&body))
            .await
            .unwrap()
            .json();
        let text = r["choices"][0]["text"].as_str().unwrap();
        assert!(
            !text.contains(&word),
            "{text:?} still holds the stop text {word:?}"
        );
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
    }

    // Bad requests: the right status and field.
    let long = "word ".repeat(2100);
    for (path, body, status, param) in [
        ("/v1/completions", json!({"prompt": prompt, "n": 2}), 400, "n"),
        (
            "/v1/completions",
            json!({"prompt": prompt, "stream": true}),
            400,
            "stream",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "logprobs": 2}),
            400,
            "",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "temperature": 3}),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "top_p": 0}),
            400,
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "model": "zzz"}),
            404,
            "model",
        ),
        ("/v1/completions", json!({"prompt": long}), 413, "prompt[0]"),
        ("/v1/completions", json!({"prompt": ""}), 400, "prompt[0]"),
        ("/v1/chat/completions", json!({"messages": []}), 400, "messages"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            400,
            "messages[0].role",
        ),
        ("/v1/classify", json!({"adapter": "a", "inputs": ["x"]}), 404, ""),
    ] {
        let r = client
            .request("POST", path, Some(&body.to_string()))
            .await
            .unwrap();
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        if !param.is_empty() {
            assert_eq!(r.json()["error"]["param"], param, "{path} {body}: {}", r.body);
        }
    }
    let r = client.request("GET", "/health", None).await.unwrap();
    assert_eq!(r.status, 200);

    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
}
