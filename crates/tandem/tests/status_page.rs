//! End-to-end in a real browser: headless Debian chromium, driven through
//! chromedriver (W3C WebDriver), opens the admin endpoint's status page while
//! tandem runs with real backends. Skips (loudly) without chromium and
//! chromedriver, unless `TANDEM_REQUIRE_NETNS=1` (CI).
//!
//! `TANDEM_STATUS_PAGE_SCREENSHOT=FILE` saves the page, with one backend up,
//! one down and one draining, as a PNG (docs/images/status-page.png).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{bin, echo_ok, http};
use serde_json::Value;
use test_support::webdriver::Browser;
use test_support::{free_addr, EchoServer, Tandem};

fn config(admin: SocketAddr, listen: SocketAddr, backends: &[(&str, SocketAddr)]) -> String {
    let mut y = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: web\n    listen: {listen}\n    health: {{ type: tcp, interval: 300ms, timeout: 200ms, rise: 1, fall: 2 }}\n    backends:\n"
    );
    for (name, addr) in backends {
        y.push_str(&format!(
            "      - {{ address: \"{addr}\", name: {name} }}\n"
        ));
    }
    y
}

/// Whether the page shows `backend` in `state` now, as a script expression.
fn shows(backend: &str, state: &str) -> String {
    format!(
        r#"document.querySelector('tr[data-backend="web/{backend}"] td.state')?.textContent === "{state}""#
    )
}

/// A script that returns [`shows`].
fn state_is(backend: &str, state: &str) -> String {
    format!("return {};", shows(backend, state))
}

async fn status_json(admin: SocketAddr) -> Value {
    let (code, body) = http(admin, "GET", "/status", &[]).await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_backends_going_down_and_drains_one_on_click() {
    let Some(browser) =
        Browser::start("status_page_shows_backends_going_down_and_drains_one_on_click")
    else {
        return;
    };
    let (e1, e2, e3) = (
        EchoServer::start().await,
        EchoServer::start().await,
        EchoServer::start().await,
    );
    let (admin, listen) = (free_addr(), free_addr());
    let backends = [("e1", e1.addr()), ("e2", e2.addr()), ("e3", e3.addr())];
    let mut tandem = Tandem::spawn(bin(), &config(admin, listen, &backends));
    tandem.wait_listening(listen);
    // Wait for the first health checks (backends start down until then).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status_json(admin)
        .await
        .to_string()
        .matches(r#""state":"up""#)
        .count()
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "backends never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..6 {
        assert!(echo_ok(listen, b"hello status page").await);
    }

    let browser = std::sync::Arc::new(browser);
    let b = std::sync::Arc::clone(&browser);
    let url = format!("http://{admin}/");
    let rows: Value = tokio::task::spawn_blocking(move || {
        b.goto(&url);
        let all_up = ["e1", "e2", "e3"]
            .map(|name| shows(name, "up"))
            .join(" && ");
        b.wait_until(
            "three backends up",
            Duration::from_secs(10),
            &format!("return {all_up};"),
        );
        b.script(
            r#"return [...document.querySelectorAll('#backends tbody tr[data-backend]')].map(
                 r => [...r.cells].map(c => c.textContent.trim()));"#,
        )
    })
    .await
    .unwrap();
    // name, address, state, weight, last check, latency, active, total, in, out, action
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut total = 0;
    for (row, (name, addr)) in rows.iter().zip(&backends) {
        let cells: Vec<&str> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cells[0], *name, "{cells:?}");
        assert_eq!(cells[1], addr.to_string());
        assert_eq!(cells[2], "up");
        assert_eq!(cells[3], "1");
        assert!(cells[4].starts_with("ok, "), "last check: {cells:?}");
        assert!(cells[5].ends_with(" ms"), "latency: {cells:?}");
        assert_eq!(cells[6], "0", "no connection open: {cells:?}");
        total += cells[7].parse::<u64>().unwrap();
        assert_eq!(cells[8], cells[9], "echo: bytes in = bytes out");
        assert_eq!(
            cells[10], "drain",
            "loopback: every backend has a drain button"
        );
    }
    assert_eq!(total, 6, "six connections in all: {rows:?}");
    let page_header: Value = browser
        .script(r#"return document.querySelector('tr[data-service="web"]').cells[1].textContent;"#);
    assert_eq!(page_header, Value::String(format!("{listen}/tcp")));

    // Stop e2 while the page is open: it turns down without a reload.
    drop(e2);
    let b = std::sync::Arc::clone(&browser);
    tokio::task::spawn_blocking(move || {
        b.wait_until(
            "e2 down on the page",
            Duration::from_secs(10),
            &state_is("e2", "down"),
        );
        let check = b.script(
            r#"return document.querySelector('tr[data-backend="web/e2"] td.check').textContent;"#,
        );
        assert!(check.as_str().unwrap().contains("refused"), "{check}");
        // Drain e3 with its button.
        b.click(r#"tr[data-backend="web/e3"] button.drain"#);
        b.wait_until(
            "e3 draining on the page",
            Duration::from_secs(10),
            &state_is("e3", "draining"),
        );
        b.wait_until(
            "e3 offers enable",
            Duration::from_secs(5),
            r#"return document.querySelector('tr[data-backend="web/e3"] button.enable') !== null;"#,
        );
    })
    .await
    .unwrap();
    let status = status_json(admin).await;
    let states: Vec<&str> = status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["up", "down", "draining"]);

    if let Some(path) = std::env::var_os("TANDEM_STATUS_PAGE_SCREENSHOT") {
        let png = browser.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(&path, png).unwrap();
    }

    // Enable again from the page.
    let b = std::sync::Arc::clone(&browser);
    tokio::task::spawn_blocking(move || {
        b.click(r#"tr[data-backend="web/e3"] button.enable"#);
        b.wait_until(
            "e3 up again",
            Duration::from_secs(10),
            &state_is("e3", "up"),
        );
    })
    .await
    .unwrap();
    drop(browser);
    drop(tandem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_before_draining() {
    let Some(browser) = Browser::start("with_a_token_the_page_asks_for_it_before_draining") else {
        return;
    };
    let e1 = EchoServer::start().await;
    let (admin, listen) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let yaml = config(admin, listen, &[("e1", e1.addr())]).replacen(
        "admin:\n",
        &format!("admin:\n  token_file: {}\n", token_file.display()),
        1,
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let url = format!("http://{admin}/");
    tokio::task::spawn_blocking(move || {
        browser.goto(&url);
        browser.wait_until("e1 up", Duration::from_secs(10), &state_is("e1", "up"));
        browser.click(r#"tr[data-backend="web/e1"] button.drain"#);
        browser.wait_until(
            "the page asks for the token",
            Duration::from_secs(5),
            r#"return document.getElementById("msg").textContent.includes("token");"#,
        );
        assert_eq!(
            browser.script(r#"return document.querySelector('td.state').textContent;"#),
            Value::String("up".into()),
            "nothing was sent without the token"
        );
        browser.type_into("#token", "wrong");
        browser.click("#usetoken");
        browser.click(r#"tr[data-backend="web/e1"] button.drain"#);
        browser.wait_until(
            "a wrong token is refused",
            Duration::from_secs(5),
            r#"return document.getElementById("msg").textContent.includes("wrong bearer token");"#,
        );
        browser.type_into("#token", "s3cret");
        browser.click("#usetoken");
        browser.click(r#"tr[data-backend="web/e1"] button.drain"#);
        browser.wait_until("e1 draining", Duration::from_secs(10), &state_is("e1", "draining"));
        // The token lives in the page only: nothing in storage, not in the field.
        assert_eq!(
            browser.script(
                r#"return localStorage.length + sessionStorage.length + document.getElementById("token").value.length;"#
            ),
            Value::from(0)
        );
    })
    .await
    .unwrap();
    let status = status_json(admin).await;
    assert_eq!(status["services"][0]["backends"][0]["state"], "draining");
}
