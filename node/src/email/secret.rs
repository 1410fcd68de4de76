//! A mailbox's password, read where the replicated state says it is (an environment variable
//! or a file of this node), each time a connection needs it, so a rotated file is picked up
//! without a restart. The password itself is never logged nor replicated.

use parley_raft::command::email::SecretRef;

use super::EmailError;

/// The password `secret` points at; empty for none.
pub fn resolve(secret: Option<&SecretRef>) -> Result<String, EmailError> {
    match secret {
        None => Ok(String::new()),
        Some(SecretRef::Env(name)) => std::env::var(name).map_err(|_| EmailError::Secret {
            what: format!("environment variable {name} is not set on this node"),
        }),
        Some(SecretRef::File(path)) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| EmailError::Secret {
                what: format!("{path}: {e}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_loses_its_newline_and_a_missing_one_says_where_it_looked() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("written");
        let file = SecretRef::File(path.display().to_string());
        assert_eq!(resolve(Some(&file)).expect("read"), "s3cret");
        assert_eq!(resolve(None).expect("none"), "");
        let missing = SecretRef::Env("PARLEY_TEST_NO_SUCH_VARIABLE".into());
        let error = resolve(Some(&missing)).expect_err("not set");
        assert!(error.to_string().contains("PARLEY_TEST_NO_SUCH_VARIABLE"));
        assert!(!error.to_string().contains("s3cret"));
    }
}
