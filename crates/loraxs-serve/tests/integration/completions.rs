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
            json!({"prompt": prompt, "stream_options": {"include_usage": true}}),
            400,
            "stream_options",
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "stream": true, "stream_options": {"usage": true}}),
            400,
            "",
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

/// The chunks of a streamed answer (`data: [DONE]` last, checked) and,
/// per choice, the joined text and the finish reason.
fn streamed(
    r: &loraxs_serve::load::HttpResponse,
    chat: bool,
) -> (Vec<serde_json::Value>, Vec<(String, String)>) {
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", r.body);
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
        .collect();
    let mut choices: Vec<(String, String)> = Vec::new();
    for c in &chunks {
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(
            c["object"],
            if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            }
        );
        for choice in c["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            if choices.len() <= i {
                choices.resize(i + 1, Default::default());
            }
            assert!(choices[i].1.is_empty(), "a chunk after the finish: {c}");
            let text = if chat {
                &choice["delta"]["content"]
            } else {
                &choice["text"]
            };
            choices[i].0.push_str(text.as_str().unwrap_or(""));
            if let Some(reason) = choice["finish_reason"].as_str() {
                choices[i].1 = reason.to_string();
            }
        }
    }
    (chunks, choices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_the_unstreamed_ones_in_pieces() {
    let Some((model, adapters)) = setup() else { return };
    let (addr, stop, done) = start(model.path(), adapters.path()).await;
    let mut client = Client::new(addr).unwrap();
    let prompts = [
        "Natalia sold clips to 48 of her friends",
        "Weng earns $12 an hour",
    ];
    let ask = |extra: serde_json::Value| {
        let mut body = json!({"model": "a", "prompt": prompts, "max_tokens": 12, "temperature": 0});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body.to_string()
    };
    let plain = client
        .request("POST", "/v1/completions", Some(&ask(json!({}))))
        .await
        .unwrap()
        .json();
    let r = client
        .request(
            "POST",
            "/v1/completions",
            Some(&ask(
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            )),
        )
        .await
        .unwrap();
    let (chunks, choices) = streamed(&r, false);
    assert!(chunks.len() > 4, "one chunk per token or so: {}", r.body);
    for (i, (text, reason)) in choices.iter().enumerate() {
        assert_eq!(*text, plain["choices"][i]["text"], "prompt {i}");
        assert_eq!(*reason, plain["choices"][i]["finish_reason"], "prompt {i}");
    }
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(*usage, plain["usage"], "the usage chunk");

    // A stop text: the pieces stop before it, as the whole answer does,
    // and it never shows in a piece.
    let text = plain["choices"][0]["text"].as_str().unwrap().to_string();
    let word = text.split_whitespace().nth(1).map(str::to_string);
    if let Some(word) = word {
        let stop_body = json!({"stop": [word.clone()]});
        let cut = client
            .request("POST", "/v1/completions", Some(&ask(stop_body.clone())))
            .await
            .unwrap()
            .json();
        let mut streamed_body = stop_body;
        streamed_body["stream"] = json!(true);
        let r = client
            .request("POST", "/v1/completions", Some(&ask(streamed_body)))
            .await
            .unwrap();
        let (_, choices) = streamed(&r, false);
        assert_eq!(choices[0].0, cut["choices"][0]["text"], "stop text {word:?}");
        assert_eq!(choices[0].1, "stop");
        assert!(!choices[0].0.contains(&word));
    }

    // Chat: a first chunk with the role, then the content in pieces.
    let chat = |stream: bool| {
        json!({"model": "b", "messages": [{"role": "user", "content": "What is 2 + 2?"}],
               "max_tokens": 8, "temperature": 0, "stream": stream})
        .to_string()
    };
    let whole = client
        .request("POST", "/v1/chat/completions", Some(&chat(false)))
        .await
        .unwrap()
        .json();
    let r = client
        .request("POST", "/v1/chat/completions", Some(&chat(true)))
        .await
        .unwrap();
    let (chunks, choices) = streamed(&r, true);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(choices[0].0, whole["choices"][0]["message"]["content"]);
    assert_eq!(choices[0].1, whole["choices"][0]["finish_reason"]);

    // A client that goes away ends its generation early; the server serves on.
    let counter = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let generated = move || async move {
        let m = Client::new(addr)
            .unwrap()
            .request("GET", "/metrics", None)
            .await
            .unwrap()
            .body;
        counter(&m, "loraxs_generated_tokens_total")
    };
    let long = json!({"model": "a", "prompt": prompts[0], "max_tokens": 400, "temperature": 0});
    // Unabandoned, this request runs to its limit.
    let full = client
        .request("POST", "/v1/completions", Some(&long.to_string()))
        .await
        .unwrap()
        .json();
    assert_eq!(full["usage"]["completion_tokens"], 400, "{full}");
    let before = generated().await;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut body = long.clone();
        body["stream"] = json!(true);
        let body = body.to_string();
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(body.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("data:") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the first event");
            seen.extend_from_slice(&buf[..n]);
        }
    } // dropped: the connection closes
    // Wait until generation has stopped (the counter holds still).
    let mut last = generated().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = generated().await;
        if now == last {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "generation never stopped");
        last = now;
    }
    let spent = last - before;
    eprintln!("tokens generated for the abandoned stream: {spent} of 400");
    assert!(spent < 400, "the abandoned stream generated all {spent} tokens");
    let r = client
        .request("POST", "/v1/completions", Some(&ask(json!({}))))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
}
