//! IMAP STARTTLS (RFC 3501 6.2.1, RFC 9051 6.2.1) up to the point where TLS starts: read the
//! greeting, make sure the server offers STARTTLS (from the greeting's capability code, else a
//! `CAPABILITY` command), send a tagged `STARTTLS` and require its tagged `OK`.
//!
//! - Lines are read with a bound (8 KiB a line, 40 lines in all), each exchange within
//!   `email.io_timeout`; a server that refuses, does not offer STARTTLS, talks too much or
//!   says nothing gives an [`EmailError`] of step `starttls`.
//! - Nothing the server sent before TLS is trusted afterwards: bytes following the tagged `OK`
//!   (a response injected before the handshake) end the connection, and the client starts on
//!   the TLS stream with fresh capabilities and without a second greeting.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::EmailError;

/// Longest line read before TLS.
pub const LINE_BYTES_MAX: usize = 8 * 1024;
/// Most lines read before TLS.
pub const LINES_MAX: usize = 40;
/// The step every failure here is reported as.
const STEP: &str = "starttls";

fn refused(problem: impl Into<String>) -> EmailError {
    EmailError::Imap {
        step: STEP,
        problem: problem.into(),
    }
}

/// Reads lines from the plain connection with the bounds above, without reading ahead of what
/// the server sent.
struct Lines<'a, S> {
    stream: &'a mut S,
    buffer: Vec<u8>,
    lines: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<'_, S> {
    async fn line(&mut self) -> Result<String, EmailError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                if end > LINE_BYTES_MAX {
                    return Err(refused("the server sent a line longer than 8 KiB"));
                }
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                self.lines += 1;
                if self.lines > LINES_MAX {
                    return Err(refused(format!(
                        "the server sent more than {LINES_MAX} lines before TLS"
                    )));
                }
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
            }
            if self.buffer.len() > LINE_BYTES_MAX {
                return Err(refused("the server sent a line longer than 8 KiB"));
            }
            let mut chunk = [0u8; 1024];
            let read = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| refused(e.to_string()))?;
            if read == 0 {
                return Err(refused("the server closed the connection"));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Sends `command` tagged `tag`; the untagged lines before the tagged answer, and whether
    /// that answer was `OK` with its text.
    async fn command(
        &mut self,
        tag: &str,
        command: &str,
    ) -> Result<(Vec<String>, Result<(), String>), EmailError> {
        self.stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await
            .map_err(|e| refused(e.to_string()))?;
        self.stream
            .flush()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await?;
            let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) else {
                untagged.push(line);
                continue;
            };
            let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let answer = if status.eq_ignore_ascii_case("OK") {
                Ok(())
            } else {
                Err(format!("{} {}", status.to_ascii_uppercase(), text.trim()))
            };
            return Ok((untagged, answer));
        }
    }
}

/// Within `io_timeout`, or a timeout of this step.
async fn within<T>(
    io_timeout: Duration,
    step: impl std::future::Future<Output = Result<T, EmailError>>,
) -> Result<T, EmailError> {
    tokio::time::timeout(io_timeout, step)
        .await
        .unwrap_or(Err(EmailError::Timeout { step: STEP }))
}

/// Whether a capability listing (`CAPABILITY a b c`, any case) names `STARTTLS`.
fn offers_starttls(listing: &str) -> bool {
    let mut words = listing.split_ascii_whitespace();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("CAPABILITY"))
        && words.any(|w| w.eq_ignore_ascii_case("STARTTLS"))
}

/// The capability listing of a greeting's response code (`* OK [CAPABILITY ...] ...`).
fn greeting_capabilities(greeting: &str) -> Option<&str> {
    // The response code directly follows the status.
    let code = greeting.splitn(3, ' ').nth(2)?.strip_prefix('[')?;
    let end = code.find(']')?;
    let code = &code[..end];
    code.get(..10)
        .is_some_and(|w| w.eq_ignore_ascii_case("CAPABILITY"))
        .then_some(code)
}

/// Negotiates STARTTLS on a fresh plain connection; on `Ok` the next byte on `stream` is the
/// TLS handshake's.
pub async fn negotiate<S>(stream: &mut S, io_timeout: Duration) -> Result<(), EmailError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut lines = Lines {
        stream,
        buffer: Vec::new(),
        lines: 0,
    };
    let greeting = within(io_timeout, lines.line()).await?;
    let mut words = greeting.split_ascii_whitespace();
    let status = match (words.next(), words.next()) {
        (Some("*"), Some(status)) => status.to_ascii_uppercase(),
        _ => String::new(),
    };
    match status.as_str() {
        "OK" => {}
        "PREAUTH" => {
            return Err(refused(
                "the server greeted with PREAUTH, where STARTTLS is not allowed",
            ))
        }
        _ => {
            return Err(refused(format!(
                "the server refused the connection: {}",
                super::without_addresses(&greeting)
            )))
        }
    }
    let offered = match greeting_capabilities(&greeting) {
        Some(listing) => offers_starttls(listing),
        None => {
            let (untagged, answer) = within(io_timeout, lines.command("p1", "CAPABILITY")).await?;
            answer.map_err(|e| refused(format!("the server refused CAPABILITY: {e}")))?;
            untagged
                .iter()
                .filter_map(|l| l.strip_prefix("* "))
                .any(offers_starttls)
        }
    };
    if !offered {
        return Err(refused("the server does not offer STARTTLS"));
    }
    let (_, answer) = within(io_timeout, lines.command("p2", "STARTTLS")).await?;
    answer.map_err(|e| {
        refused(format!(
            "the server refused STARTTLS: {}",
            super::without_addresses(&e)
        ))
    })?;
    if !lines.buffer.is_empty() {
        return Err(refused(
            "the server sent data after accepting STARTTLS, before TLS started",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IO: Duration = Duration::from_secs(5);

    /// Runs `negotiate` against a server that reads what the client sends and answers with
    /// `script`: each element is what it writes after reading one more client line (the first
    /// is the greeting, written at once). Returns the outcome and the lines the client sent.
    async fn against(script: &[&str], io: Duration) -> (Result<(), EmailError>, Vec<String>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let script: Vec<String> = script.iter().map(|s| (*s).to_owned()).collect();
        let server = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server);
            let mut read = tokio::io::BufReader::new(read);
            let mut sent = Vec::new();
            for (i, answer) in script.iter().enumerate() {
                if i > 0 {
                    let mut line = String::new();
                    if tokio::io::AsyncBufReadExt::read_line(&mut read, &mut line)
                        .await
                        .unwrap_or(0)
                        == 0
                    {
                        break;
                    }
                    sent.push(line.trim_end().to_owned());
                }
                if write.write_all(answer.as_bytes()).await.is_err() {
                    break;
                }
            }
            // Keep the connection open (silent) until the client is done.
            let mut rest = String::new();
            let _ = tokio::io::AsyncBufReadExt::read_line(&mut read, &mut rest).await;
            sent
        });
        let outcome = negotiate(&mut client, io).await;
        drop(client);
        let sent = server.await.unwrap_or_default();
        (outcome, sent)
    }

    fn problem(outcome: Result<(), EmailError>) -> String {
        match outcome {
            Err(EmailError::Imap { step, problem }) => {
                assert_eq!(step, "starttls");
                problem
            }
            other => panic!("expected a starttls failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn starttls_from_the_greetings_capabilities() {
        let (outcome, sent) = against(
            &[
                "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n",
                "p2 OK Begin TLS negotiation now.\r\n",
            ],
            IO,
        )
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(sent, vec!["p2 STARTTLS"]);
    }

    #[tokio::test]
    async fn starttls_after_asking_for_capabilities() {
        let (outcome, sent) = against(
            &[
                "* OK ready\r\n",
                "* CAPABILITY IMAP4rev1 starttls\r\np1 OK done\r\n",
                "p2 ok go\r\n",
            ],
            IO,
        )
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(sent, vec!["p1 CAPABILITY", "p2 STARTTLS"]);
    }

    #[tokio::test]
    async fn a_server_without_starttls_is_refused_before_asking() {
        let (outcome, sent) = against(
            &["* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n", ""],
            IO,
        )
        .await;
        assert!(problem(outcome).contains("does not offer STARTTLS"));
        assert!(sent.is_empty(), "{sent:?}");
    }

    #[tokio::test]
    async fn a_refused_starttls_is_an_error() {
        for answer in ["p2 NO not now\r\n", "p2 BAD what\r\n"] {
            let (outcome, _) =
                against(&["* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n", answer], IO).await;
            let problem = problem(outcome);
            assert!(problem.contains("refused STARTTLS"), "{problem}");
        }
    }

    #[tokio::test]
    async fn a_bye_or_preauth_greeting_is_refused() {
        let (outcome, _) = against(&["* BYE too busy\r\n"], IO).await;
        assert!(problem(outcome).contains("refused the connection"));
        let (outcome, _) = against(&["* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"], IO).await;
        assert!(problem(outcome).contains("PREAUTH"));
    }

    #[tokio::test]
    async fn data_injected_after_the_ok_is_refused() {
        let (outcome, _) = against(
            &[
                "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
                "p2 OK go\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n",
            ],
            IO,
        )
        .await;
        assert!(problem(outcome).contains("after accepting STARTTLS"));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let long = format!("* OK {}\r\n", "x".repeat(LINE_BYTES_MAX + 10));
        let (outcome, _) = against(&[&long], IO).await;
        assert!(problem(outcome).contains("longer than 8 KiB"));
        let chatter = "* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n".to_owned()
            + &"* NOTE chatter\r\n".repeat(LINES_MAX + 1);
        let (outcome, _) = against(&["* OK hi\r\n", &chatter], IO).await;
        assert!(problem(outcome).contains("more than"));
    }

    #[tokio::test]
    async fn a_silent_or_closing_server_ends_in_time() {
        let started = std::time::Instant::now();
        let (outcome, _) = against(&[""], Duration::from_millis(200)).await;
        assert!(
            matches!(outcome, Err(EmailError::Timeout { step: "starttls" })),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Greets, then closes when asked.
        let (client, server) = tokio::io::duplex(1024);
        let mut client = client;
        let writer = tokio::spawn(async move {
            let mut server = server;
            let _ = server.write_all(b"* OK [CAPABILITY STARTTLS] hi\r\n").await;
        });
        let outcome = negotiate(&mut client, IO).await;
        let _ = writer.await;
        let problem = problem(outcome);
        assert!(
            problem.contains("closed") || problem.contains("pipe"),
            "{problem}"
        );
    }
}
