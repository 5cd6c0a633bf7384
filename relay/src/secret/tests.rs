use super::*;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;

use hark_core::ConvName;
use hark_core::token::{
    Grant, KeyringError, Right, Rights, SECRET_FILE_LEN_MAX, Scope, SecretFileError, SecretKey,
    Subject,
};

/// A config for `data_dir` with `extra` flags.
fn config(data_dir: &Path, extra: &[&str]) -> RelayConfig {
    let mut args: Vec<OsString> = vec!["hark-relay".into(), "--data-dir".into(), data_dir.into()];
    args.extend(extra.iter().map(OsString::from));
    RelayConfig::from_args(args).unwrap()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// A secret file at `path` with `mode` holding one fixed key.
fn write_secret(path: &Path, mode: u32) -> Keyring {
    let keyring = Keyring::new(KeyId(9), SecretKey::from_bytes([7; 32]));
    fs::write(path, keyring.render()).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    keyring
}

fn grant(key_id: KeyId) -> Grant {
    Grant {
        subject: Subject::new("alice").unwrap(),
        rights: Rights::of(&[Right::Talk]),
        scope: Scope::Conversation(ConvName::new("general").unwrap()),
        expires_at_s: 1_900_000_000,
        key_id,
    }
}

#[test]
fn generated_secret_is_private_and_reloads_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = config(&data_dir, &[]);

    let (created, source) = load_keyring(&config).unwrap();
    let path = data_dir.join("secret");
    assert_eq!(source, SecretSource::Created(path.clone()));
    assert_eq!(source.path(), path);
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(&data_dir), 0o700);
    assert_eq!(created.minting_key_id(), KeyId(1));
    // Only the secret itself remains: the temporary file is gone.
    let names: Vec<_> = fs::read_dir(&data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsString::from("secret")]);

    let (reloaded, source) = load_keyring(&config).unwrap();
    assert_eq!(source, SecretSource::Existing(path.clone()));
    assert_eq!(reloaded.render(), created.render());
    assert_eq!(fs::read_to_string(&path).unwrap(), created.render());
    // A token minted with the first load verifies with the second: `hark` and the relay agree.
    let token = created.mint(&grant(KeyId(1))).unwrap();
    assert_eq!(
        reloaded.verify(&token, 1_800_000_000).unwrap(),
        grant(KeyId(1))
    );
    // And `hark` reading the file gets the same keys.
    assert_eq!(read_secret_file(&path).unwrap().render(), created.render());
    assert_eq!(
        load_or_create_in(&data_dir).unwrap().1,
        SecretSource::Existing(path)
    );
}

#[test]
fn two_data_dirs_get_different_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = load_or_create_in(&dir.path().join("a")).unwrap();
    let (second, _) = load_or_create_in(&dir.path().join("b")).unwrap();
    assert_ne!(first.render(), second.render());
}

#[test]
fn configured_secret_is_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("keys");
    let written = write_secret(&secret, 0o400);
    let config = config(
        &dir.path().join("data"),
        &["--secret-file", secret.to_str().unwrap()],
    );
    let (keyring, source) = load_keyring(&config).unwrap();
    assert_eq!(source, SecretSource::Configured(secret.clone()));
    assert_eq!(keyring.render(), written.render());
    assert_eq!(
        mode_of(&secret),
        0o400,
        "a configured file is never changed"
    );
    assert!(!dir.path().join("data").exists(), "nothing is created");
}

#[test]
fn configured_secret_missing_is_an_error_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("keys");
    let data_dir = dir.path().join("data");
    let config = config(&data_dir, &["--secret-file", secret.to_str().unwrap()]);
    let result = load_keyring(&config);
    assert!(
        matches!(&result, Err(SecretError::File(SecretFileError::Missing { path })) if *path == secret),
        "{result:?}"
    );
    assert!(!secret.exists() && !data_dir.exists());
}

#[test]
fn secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("keys");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o610] {
        write_secret(&secret, mode);
        let result = read_secret_file(&secret);
        assert!(
            matches!(&result, Err(SecretError::File(SecretFileError::PermissionsTooOpen { mode: found, .. })) if *found == mode),
            "{mode:o}: {result:?}"
        );
    }
    let text = read_secret_file(&secret).unwrap_err().to_string();
    assert!(
        text.contains("0610") && text.contains("chmod 600"),
        "{text}"
    );
    write_secret(&secret, 0o600);
    read_secret_file(&secret).unwrap();

    // The generated file is checked the same way when it is found again.
    let data_dir = dir.path().join("data");
    let config = config(&data_dir, &[]);
    load_keyring(&config).unwrap();
    fs::set_permissions(data_dir.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load_keyring(&config),
        Err(SecretError::File(
            SecretFileError::PermissionsTooOpen { .. }
        ))
    ));
}

#[test]
fn non_loopback_listen_without_a_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    for listen in ["0.0.0.0:7400", "192.0.2.1:7400", "[::]:7400"] {
        let config = config(&data_dir, &["--listen", listen]);
        let error = load_keyring(&config).unwrap_err();
        assert!(
            matches!(error, SecretError::NonLoopbackWithoutSecret { .. }),
            "{listen}"
        );
        let text = error.to_string();
        assert!(
            text.contains(listen) && text.contains("--secret-file"),
            "{text}"
        );
        assert!(!data_dir.exists(), "nothing is created for {listen}");
    }
    // Even an earlier generated secret is not picked up silently: it must be named.
    load_or_create_in(&data_dir).unwrap();
    let exposed = config(&data_dir, &["--listen", "0.0.0.0:7400"]);
    assert!(matches!(
        load_keyring(&exposed),
        Err(SecretError::NonLoopbackWithoutSecret { .. })
    ));
    let secret = data_dir.join("secret");
    let named = config(
        &data_dir,
        &[
            "--listen",
            "0.0.0.0:7400",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    );
    assert_eq!(
        load_keyring(&named).unwrap().1,
        SecretSource::Configured(secret)
    );
}

#[test]
fn every_loopback_address_may_generate() {
    for listen in [
        "127.0.0.1:7400",
        "127.3.4.5:0",
        "[::1]:7400",
        "[::ffff:127.0.0.1]:7400",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &["--listen", listen]);
        let (_, source) = load_keyring(&config).unwrap();
        assert!(matches!(source, SecretSource::Created(_)), "{listen}");
    }
}

#[test]
fn files_that_are_not_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let private =
        |path: &Path| fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();

    fs::write(&path, "key one 00\n").unwrap();
    private(&path);
    assert!(matches!(
        read_secret_file(&path),
        Err(SecretError::File(SecretFileError::Invalid {
            source: KeyringError::KeyIdInvalid { line: 1 },
            ..
        }))
    ));
    fs::write(&path, "# no keys\n").unwrap();
    assert!(matches!(
        read_secret_file(&path),
        Err(SecretError::File(SecretFileError::Invalid {
            source: KeyringError::KeysMissing,
            ..
        }))
    ));
    fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
    assert!(matches!(
        read_secret_file(&path),
        Err(SecretError::File(SecretFileError::NotText { .. }))
    ));
    fs::write(&path, "#".repeat(SECRET_FILE_LEN_MAX + 10)).unwrap();
    assert!(matches!(
        read_secret_file(&path),
        Err(SecretError::File(SecretFileError::Invalid { source: KeyringError::FileTooLong { len }, .. }))
            if len == SECRET_FILE_LEN_MAX + 1
    ));

    let directory = dir.path().join("dir");
    fs::create_dir(&directory).unwrap();
    private(&directory);
    assert!(matches!(
        read_secret_file(&directory),
        Err(SecretError::File(SecretFileError::NotAFile { .. }))
    ));

    let through_file = path.join("below");
    assert!(matches!(
        read_secret_file(&through_file),
        Err(SecretError::File(SecretFileError::Unreadable { .. }))
    ));
}

#[test]
fn a_secret_created_concurrently_wins() {
    // Another process links its file between our read and our link: ours is discarded and
    // theirs loaded, so both processes use the same keys.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let theirs = write_secret(&path, 0o600);
    let (keyring, source) = create_secret_file(dir.path(), &path).unwrap();
    assert_eq!(source, SecretSource::Existing(path.clone()));
    assert_eq!(keyring.render(), theirs.render());
    assert!(!temp_path_for(&path).exists());
}

#[test]
fn a_stale_temporary_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let temp = temp_path_for(&path);
    fs::write(&temp, "half a key").unwrap();
    let (keyring, source) = create_secret_file(dir.path(), &path).unwrap();
    assert_eq!(source, SecretSource::Created(path.clone()));
    assert_eq!(read_secret_file(&path).unwrap().render(), keyring.render());
    assert!(!temp.exists());
}

#[test]
fn an_unwritable_data_dir_is_a_create_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let result = load_or_create_in(&file.join("data"));
    assert!(
        matches!(
            result,
            Err(SecretError::File(SecretFileError::Unreadable { .. })
                | SecretError::CreateFailed { .. })
        ),
        "{result:?}"
    );
}
