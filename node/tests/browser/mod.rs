//! A real Chromium, headless, driven through Debian's chromedriver (WebDriver) by fantoccini,
//! for the page tests. `./dev.sh test` installs `chromium` and `chromium-driver`; without them
//! these tests fail and say so.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long a page may take to show what a step waits for.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A chromedriver process; every [`Browser`] is a session of it (its own Chromium).
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/lib/chromium")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it answers.
    pub async fn start() -> Self {
        let driver = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver not found: the page tests need Debian's chromium and \
                 chromium-driver (./dev.sh test installs them)"
            )
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port for chromedriver");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    /// A new headless Chromium.
    pub async fn browser(&self) -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("chromium not found (./dev.sh test installs it)"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                    "--autoplay-policy=no-user-gesture-required"
                ]
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        Browser { client }
    }
}

/// One browser window.
pub struct Browser {
    pub client: Client,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigating");
    }

    /// The element matching `css`, waiting for it.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let page = self.describe().await;
                panic!("no element {css} within {STEP_TIMEOUT:?}: {e}\n{page}")
            }
        }
    }

    /// The page's address and text, for a failure report.
    pub async fn describe(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
            .unwrap_or_default();
        format!("page {url} shows:\n{}", text.as_str().unwrap_or_default())
    }

    /// Types into the element matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.expect("typing");
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("clicking");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and answers its return value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy, and answers it.
    pub async fn until(&self, what: &str, script: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.js(script, vec![]).await;
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.describe().await;
                panic!("{what}: not seen within {within:?} (last: {value})\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The texts of the message bubbles under `css`, in page order.
    pub async fn messages(&self, css: &str) -> Vec<String> {
        let value = self
            .js(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e => \
                 e.querySelector('.text').textContent);",
                vec![json!(css)],
            )
            .await;
        serde_json::from_value(value).unwrap_or_default()
    }

    /// A PNG of the window; kept in docs/screenshots when `UPDATE_SCREENSHOTS` is set.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG"),
            "the screenshot of {name} is not a PNG"
        );
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            std::fs::create_dir_all(&dir).expect("docs/screenshots");
            std::fs::write(dir.join(format!("{name}.png")), png).expect("writing the screenshot");
        }
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A one-page web server on its own origin (`http://127.0.0.1:<port>`), for embedding the
/// widget in a page of another site.
pub struct HostPage {
    pub origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostPage {
    /// Serves `html` at every path.
    pub async fn serve(html: String) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the host page");
        let origin = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("address").port()
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let html = html.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let _ = socket.read(&mut buffer).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{html}",
                        html.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { origin, task }
    }
}
