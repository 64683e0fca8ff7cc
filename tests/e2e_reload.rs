//! `db_url` provisioning and MI `rtpproxy_reload` through OpenSIPS's DB API, with a real
//! OpenSIPS 3.6.8 and the `db_sqlite` / `db_text` modules.

mod e2e;

use std::path::Path;
use std::process::Command;

use e2e::{cfg, json, port, scratch, Env, Impl, OpenSips, Relay};

fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()")
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nodes(show: &serde_json::Value) -> Vec<(i64, String, i64)> {
    let mut v = Vec::new();
    for set in show.as_array().unwrap() {
        for n in set["Nodes"].as_array().unwrap() {
            v.push((
                set["Set"].as_i64().unwrap(),
                n["url"].as_str().unwrap().to_string(),
                n["disabled"].as_i64().unwrap(),
            ));
        }
    }
    v
}

#[test]
fn reload_from_sqlite_replaces_the_list_and_a_failed_reload_keeps_it() {
    let name = "reload_from_sqlite_replaces_the_list_and_a_failed_reload_keeps_it";
    let Some(env) = Env::get(name) else { return };
    if !env.mpath.join("db_sqlite.so").exists() {
        e2e::skip(name, &format!("no db_sqlite.so in {}", env.mpath.display()));
        return;
    }
    let (dead, alive) = (port(), port());
    let Some(_relay) = Relay::start(&[format!("udp:127.0.0.1:{alive}")]) else {
        e2e::skip(name, "no RTPProxy engine");
        return;
    };
    let dir = scratch("reload-sqlite");
    let db = dir.join("nodes.db");
    sqlite(
        &db,
        &format!(
            "CREATE TABLE rtpproxy_sockets (id INTEGER PRIMARY KEY, rtpproxy_sock TEXT, set_id INTEGER);
             INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('udp:127.0.0.1:{dead}', 0);"
        ),
    );
    let params = format!(
        "modparam(\"rtpproxy\", \"db_url\", \"sqlite://{}\")\nmodparam(\"rtpproxy\", \"rtpproxy_timeout\", \"0.2\")",
        db.display()
    );
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        "loadmodule \"db_sqlite.so\"",
        "",
    );
    let os = OpenSips::start(&env, &c).unwrap();
    let before = nodes(&json(&os.mi("rtpproxy_show", &[]).unwrap()));
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].1, format!("udp:127.0.0.1:{dead}"));

    // A new list: the old node goes, two nodes in set 0 and set 2 arrive.
    sqlite(
        &db,
        &format!(
            "DELETE FROM rtpproxy_sockets;
             INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('udp:127.0.0.1:{alive}=2', 0);
             INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('udp:127.0.0.1:{alive} udp:127.0.0.1:{dead}', 2);"
        ),
    );
    assert_eq!(os.mi("rtpproxy_reload", &[]).unwrap().trim(), "\"OK\"");
    let show = json(&os.mi("rtpproxy_show", &[]).unwrap());
    println!("after reload: {show}");
    let after = nodes(&show);
    assert_eq!(
        after.iter().map(|n| (n.0, n.1.clone())).collect::<Vec<_>>(),
        vec![
            (0, format!("udp:127.0.0.1:{alive}")),
            (2, format!("udp:127.0.0.1:{alive}")),
            (2, format!("udp:127.0.0.1:{dead}")),
        ]
    );
    assert_eq!(show[0]["Nodes"][0]["weight"], 2);
    // The prober probes the new nodes: the live one comes up, the dead one stays down.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut now_up = false;
    while std::time::Instant::now() < deadline && !now_up {
        let n = nodes(&json(&os.mi("rtpproxy_show", &[]).unwrap()));
        now_up = n[0].2 == 0 && n[1].2 == 0 && n[2].2 == 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        now_up,
        "reloaded nodes not probed: {}",
        os.mi("rtpproxy_show", &[]).unwrap()
    );
    assert_eq!(show[1]["Nodes"][1]["index"], 2);

    // A bad row: the reload fails and the list stays as it was.
    sqlite(
        &db,
        "INSERT INTO rtpproxy_sockets (rtpproxy_sock, set_id) VALUES ('udp:127.0.0.1:99999', 0);",
    );
    let err = os.mi("rtpproxy_reload", &[]).unwrap_err();
    assert!(err.contains("Reload failed"), "{err}");
    let kept = nodes(&json(&os.mi("rtpproxy_show", &[]).unwrap()));
    assert_eq!(
        kept.iter().map(|n| &n.1).collect::<Vec<_>>(),
        after.iter().map(|n| &n.1).collect::<Vec<_>>()
    );

    // The database going away: same.
    std::fs::remove_file(&db).unwrap();
    std::fs::create_dir(&db).unwrap(); // not a database any more
    let err = os.mi("rtpproxy_reload", &[]).unwrap_err();
    assert!(err.contains("Reload failed"), "{err}");
    let kept = nodes(&json(&os.mi("rtpproxy_show", &[]).unwrap()));
    assert_eq!(kept.len(), 3);
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn db_text_provisioning_and_reload() {
    let name = "db_text_provisioning_and_reload";
    let Some(env) = Env::get(name) else { return };
    if !env.mpath.join("db_text.so").exists() {
        e2e::skip(name, &format!("no db_text.so in {}", env.mpath.display()));
        return;
    }
    let dir = scratch("reload-text");
    let tables = dir.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let write = |rows: &str| {
        std::fs::write(
            tables.join("rtpproxy_sockets"),
            format!("rtpproxy_sock(str) set_id(int)\n{rows}"),
        )
        .unwrap()
    };
    write("udp\\:127.0.0.1\\:40001:1\n");
    let params = format!(
        "modparam(\"rtpproxy\", \"db_url\", \"text://{}\")\nmodparam(\"rtpproxy\", \"default_set\", 1)",
        tables.display()
    );
    let c = cfg(
        &env,
        Impl::Ours,
        &dir,
        &params,
        "loadmodule \"db_text.so\"",
        "",
    );
    let os = OpenSips::start(&env, &c).unwrap();
    let before = nodes(&json(&os.mi("rtpproxy_show", &[]).unwrap()));
    assert_eq!(
        before,
        vec![(1, "udp:127.0.0.1:40001".to_string(), before[0].2)]
    );
    write("udp\\:127.0.0.1\\:40002:1\nudp\\:127.0.0.1\\:40003:1\n");
    // db_text serves tables from memory: it re-reads its files on `dbt_reload`.
    os.mi("dbt_reload", &[]).unwrap();
    os.mi("rtpproxy_reload", &[]).unwrap();
    let after = nodes(&json(&os.mi("rtpproxy_show", &[]).unwrap()));
    assert_eq!(
        after.iter().map(|n| n.1.as_str()).collect::<Vec<_>>(),
        vec!["udp:127.0.0.1:40002", "udp:127.0.0.1:40003"]
    );
    let (status, log) = os.stop();
    assert!(status.success(), "{log}");
}
