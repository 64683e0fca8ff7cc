//! The support matrix in README.md against the recorded probe results
//! (tests/abi_probe/results/): every release with results has a row, every row has results,
//! and each row names the profile the build derives for it (the first release, in version
//! order, whose results are identical).

use std::path::Path;

fn version_key(release: &str) -> Vec<u32> {
    release.split('.').filter_map(|p| p.parse().ok()).collect()
}

/// `(release, result lines without comments)`, in version order.
fn results() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/abi_probe/results");
    let mut out: Vec<(String, Vec<String>)> = std::fs::read_dir(&dir)
        .expect("results directory")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name
                .strip_prefix("opensips-")?
                .strip_suffix(".txt")?
                .to_owned();
            let text = std::fs::read_to_string(e.path()).ok()?;
            let lines = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(str::to_owned)
                .collect();
            Some((release, lines))
        })
        .collect();
    out.sort_by_key(|(r, _)| version_key(r));
    out
}

fn derived_profiles() -> Vec<(String, String)> {
    let all = results();
    all.iter()
        .map(|(r, lines)| {
            let first = all.iter().find(|(_, l)| l == lines).expect("itself");
            (r.clone(), first.0.clone())
        })
        .collect()
}

/// `(release, profile)` rows of the README's support matrix.
fn readme_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Supported OpenSIPS releases")
        .nth(1)
        .expect("README section \"Supported OpenSIPS releases\"");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| OpenSIPS"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[2].to_owned())
        })
        .collect()
}

#[test]
fn readme_matrix_matches_the_probe_results() {
    let derived = derived_profiles();
    assert!(derived.len() >= 11, "{derived:?}");
    assert_eq!(readme_rows(), derived);
}

#[test]
fn every_recorded_release_kept_the_called_signatures() {
    for (release, lines) in results() {
        let sigs: Vec<&String> = lines.iter().filter(|l| l.starts_with("sig ")).collect();
        assert!(!sigs.is_empty(), "{release}: no signature checks recorded");
        for l in sigs {
            assert!(l.ends_with(" 1"), "{release}: {l}");
        }
    }
}

#[test]
fn the_build_used_the_derived_profile() {
    let release = env!("RTPPROXY_HOST_RELEASE");
    let derived = derived_profiles();
    let (_, profile) = derived
        .iter()
        .find(|(r, _)| r == release)
        .expect("the release built for has results");
    assert_eq!(profile, env!("RTPPROXY_HOST_PROFILE"));
}
