//! The dashboard of `tend run`, in a real headless Chromium: a killed instance's slot turns
//! dead and then healthy again without a reload, a failed rollout shows its group paused
//! with the reason, and a group opens and closes by keyboard. It saves a screenshot.

use crate::browser::{available, Browser};
use crate::examples::http_get;
use crate::harness::{signal, text};
use crate::process::{wait_for, Project};
use crate::run::{converged, Running};

fn web_spec(command: &str) -> String {
    crate::run::web_spec(command, 18431)
}

/// The states slot `slot` of group `web` showed, in order, since this was installed.
const WATCH_SLOT: &str = r#"
    window.tendSeen = [];
    const look = () => {
      const cell = document.querySelector('#slots-web [data-slot="1"]');
      const state = cell ? cell.dataset.state : 'none';
      const seen = window.tendSeen;
      if (!seen.length || seen[seen.length - 1].state !== state) seen.push({ state, at: Date.now() });
    };
    new MutationObserver(look).observe(document.getElementById('groups'),
      { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
    look();
    window.tendMarker = 'the same page';
    return true;
"#;

#[test]
fn the_dashboard_follows_a_death_a_heal_and_a_paused_rollout_without_a_reload() {
    let test =
        "dashboard::the_dashboard_follows_a_death_a_heal_and_a_paused_rollout_without_a_reload";
    if !available(test) {
        return;
    }
    let serve = r#"["python3", "-m", "http.server", "{{ 18431 + instance.index }}", "--bind", "127.0.0.1"]"#;
    let p = Project::new("it-dashboard", &web_spec(serve));
    let run = Running::start(&p, 19331, &[]);
    wait_for(|| converged(&p) && (18431..18435).all(|port| http_get(port, "/").is_ok()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let browser = Browser::open().await;
        let url = format!("http://127.0.0.1:{}/", 19331);
        browser
            .client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        browser
            .wait_until(
                "four healthy slots",
                "return document.querySelectorAll('#slots-web .cell.healthy').length === 4",
            )
            .await;
        let header = browser
            .eval("return document.querySelector('header').innerText")
            .await;
        let header = header.as_str().unwrap_or_default();
        assert!(header.contains("it-dashboard"), "{header}");
        assert!(header.contains("spec serial 1"), "{header}");
        assert!(header.contains("one controller"), "{header}");
        assert_eq!(browser.eval(WATCH_SLOT).await, true);

        // Killed: its slot turns dead, then healthy again, on the same page.
        let victim = p
            .live()
            .into_iter()
            .find(|l| l.slot == "1")
            .unwrap_or_else(|| panic!("no instance in slot 1"));
        signal(victim.pid, "-9");
        browser
            .wait_until(
                "slot 1 dead, then healthy",
                "const s = window.tendSeen.map(x => x.state);
                 const dead = s.indexOf('dead');
                 return dead >= 0 && s.slice(dead).includes('healthy')
                   && s[s.length - 1] === 'healthy';",
            )
            .await;
        let cell = browser
            .eval("return document.querySelector('#slots-web [data-slot=\"1\"]').textContent")
            .await;
        assert_eq!(cell, "1 H", "the state is written, not only coloured");
        assert_eq!(browser.eval("return window.tendMarker").await, "the same page");
        browser
            .wait_until(
                "the death in the event list",
                "return [...document.querySelectorAll('#events li')].some(l => l.dataset.kind === 'exited' && l.innerText.includes('web/1'))",
            )
            .await;

        // By keyboard: the group's button closes and opens its slots.
        let toggle = browser
            .client
            .find(fantoccini::Locator::Css("#group-web h3 button"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        toggle.send_keys("\u{E007}").await.unwrap_or_else(|e| panic!("{e}"));
        browser
            .wait_until(
                "the group closed",
                "return document.getElementById('slots-web').hidden === true",
            )
            .await;
        assert_eq!(
            browser.eval("return document.activeElement.textContent").await,
            "web"
        );
        toggle.send_keys("\u{E007}").await.unwrap_or_else(|e| panic!("{e}"));
        browser
            .wait_until(
                "the group open again",
                "return document.querySelectorAll('#slots-web .cell').length === 4",
            )
            .await;

        // A bad deploy: the group shows paused, with the reason, on the same page.
        p.write_spec(&web_spec(r#"["sleep", "1000"]"#));
        let out = p.tend(&["apply", "--yes"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        browser
            .wait_until(
                "the group paused",
                "return document.getElementById('group-web').dataset.phase === 'paused'",
            )
            .await;
        let reason = browser
            .eval("return document.querySelector('#group-web .reason').innerText")
            .await;
        let reason = reason.as_str().unwrap_or_default();
        assert!(reason.starts_with("PAUSED: web/0: new instance"), "{reason}");
        assert_eq!(browser.eval("return window.tendMarker").await, "the same page");

        let shot = browser
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, shot).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("dashboard screenshot: {}", path.display());
        browser.close().await;
    });
    drop(run);
    p.ok(&["destroy", "--yes"]);
}
