//! `gaoler import-fail2ban`: reads a fail2ban tree (fail2ban.conf, jail.conf,
//! jail.d, .local overrides, filter.d) the way fail2ban does (`ini`), translates its
//! regexes (`regex`) and jail options (`jail`), and writes a gaoler configuration
//! directory with a report of what converted fully, partly or not at all.

mod filter;
mod ini;
mod jail;
mod regex;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use filter::FilterOut;
use ini::{Ini, Scope};

/// How much of a jail or filter came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Converted,
    Partial,
    Skipped,
}

/// One line of the report.
#[derive(Debug)]
pub struct Entry {
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
    pub notes: Vec<String>,
}

/// What the import did.
#[derive(Debug, Default)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// Jails defined but not enabled (not written).
    pub disabled: Vec<String>,
}

impl Report {
    fn add(&mut self, kind: &'static str, name: &str, outcome: Outcome, notes: Vec<String>) {
        self.entries.push(Entry {
            kind,
            name: name.to_string(),
            outcome,
            notes,
        });
    }

    /// How many filters converted with each outcome.
    pub fn count(&self, kind: &str, outcome: Outcome) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == kind && e.outcome == outcome)
            .count()
    }

    /// The report as text, one line per jail and filter, notes indented.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let what = match e.outcome {
                Outcome::Converted => "converted",
                Outcome::Partial => "partially converted",
                Outcome::Skipped => "skipped",
            };
            let _ = writeln!(out, "{:<6} {:<28} {what}", e.kind, e.name);
            for n in &e.notes {
                let _ = writeln!(out, "         - {n}");
            }
        }
        if !self.disabled.is_empty() {
            let _ = writeln!(
                out,
                "{} jails not enabled in fail2ban were not written: {}",
                self.disabled.len(),
                self.disabled.join(", ")
            );
        }
        for kind in ["jail", "filter"] {
            let _ = writeln!(
                out,
                "{kind}s: {} converted, {} partially converted, {} skipped",
                self.count(kind, Outcome::Converted),
                self.count(kind, Outcome::Partial),
                self.count(kind, Outcome::Skipped)
            );
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0} has no jail.conf: is it a fail2ban configuration directory?")]
    NotFail2ban(PathBuf),
    #[error("{0} already holds a gaoler.toml: import into a new or empty directory")]
    OutputExists(PathBuf),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Imports the fail2ban tree in `src` into the new gaoler config directory `out`.
pub fn import(src: &Path, out: &Path) -> Result<Report, ImportError> {
    if !src.join("jail.conf").is_file() {
        return Err(ImportError::NotFail2ban(src.to_path_buf()));
    }
    if out.join("gaoler.toml").exists() {
        return Err(ImportError::OutputExists(out.to_path_buf()));
    }
    let mut report = Report::default();
    let jails = Ini::read(&jail_files(src), false);

    // Every filter of filter.d (read once, with includes and .local), with its own
    // defaults.
    let inis: BTreeMap<String, Ini> = std::fs::read_dir(src.join("filter.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            Some((name, Ini::read(&[p], true)))
        })
        .collect();
    let mut filters: BTreeMap<String, Option<FilterOut>> = BTreeMap::new();
    for (name, ini) in &inis {
        let converted = filter::convert(ini, name, name, &[], &mut report);
        filters.insert(name.clone(), converted);
    }

    // The enabled jails (recidive becomes gaoler's native [recidive]).
    let defaults = Scope {
        ini: &jails,
        section: "DEFAULT",
        layers: vec![],
    };
    let mut main = main_config(src, &defaults, &mut report);
    let mut jail_files_out: Vec<(String, toml::Table)> = Vec::new();
    let mut recipes: Vec<jail::Recipe> = Vec::new();
    for name in &jails.order {
        let scope = Scope {
            ini: &jails,
            section: name,
            layers: vec![],
        };
        if scope.get("enabled").as_deref().and_then(jail::boolean) != Some(true) {
            report.disabled.push(name.clone());
            continue;
        }
        let (base, opts) = jail::filter_spec(&scope.get("filter").unwrap_or_default());
        if base == "recidive" || name == "recidive" {
            let keys = jail::common_keys(&scope);
            let mut rec = toml::Table::new();
            rec.insert("enabled".into(), true.into());
            for k in ["maxretry", "findtime", "bantime"] {
                if let Some(v) = keys.table.get(k) {
                    rec.insert(k.into(), v.clone());
                }
            }
            main.insert("recidive".into(), rec.into());
            report.add(
                "jail",
                name,
                Outcome::Converted,
                vec!["became gaoler's native [recidive] in gaoler.toml (computed from the ban store, no log to read)".into()],
            );
            continue;
        }
        if base.is_empty() {
            report.add("jail", name, Outcome::Skipped, vec!["no filter".into()]);
            continue;
        }
        let Some(ini) = inis.get(&base) else {
            report.add(
                "jail",
                name,
                Outcome::Skipped,
                vec![format!("filter.d/{base}.conf not found")],
            );
            continue;
        };
        // Options that differ from the filter's own make a filter of their own.
        let own = filter::non_default_options(ini, &opts);
        let filter_name = if own.is_empty() {
            base.clone()
        } else {
            let suffix: Vec<&str> = own.iter().map(|(_, v)| v.as_str()).collect();
            sanitize(&format!("{base}-{}", suffix.join("-")))
        };
        if !filters.contains_key(&filter_name) {
            let converted = filter::convert(ini, &base, &filter_name, &own, &mut report);
            filters.insert(filter_name.clone(), converted);
        }
        let journalmatch = filters
            .get(&filter_name)
            .and_then(|f| f.as_ref())
            .map(|f| f.journalmatch.clone());
        let Some(journalmatch) = journalmatch else {
            report.add(
                "jail",
                name,
                Outcome::Skipped,
                vec![format!(
                    "filter `{base}` could not be converted (see its line)"
                )],
            );
            continue;
        };
        let (table, outcome, notes) =
            convert_jail(&scope, &filter_name, journalmatch, &mut recipes);
        report.add("jail", name, outcome, notes);
        if let Some(table) = table {
            jail_files_out.push((sanitize(name), table));
        }
    }

    // Write it all.
    let write = |rel: &str, text: &str| -> Result<(), ImportError> {
        let path = out.join(rel);
        let fail = |e: std::io::Error| ImportError::Write {
            path: path.clone(),
            reason: crate::util::io_reason(&e),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::write(&path, text).map_err(fail)
    };
    let header = format!(
        "# Imported from the fail2ban configuration in {} by `gaoler import-fail2ban`.\n\n",
        src.display()
    );
    let main_text = toml::to_string(&main).unwrap_or_default();
    write("gaoler.toml", &format!("{header}{main_text}"))?;
    for (name, table) in &jail_files_out {
        let text = toml::to_string(table).unwrap_or_default();
        write(&format!("jails/{name}.toml"), &format!("{header}{text}"))?;
    }
    // The notification recipes the jails run, as shipped, executable.
    for recipe in &recipes {
        let rel = format!("notify/{}", recipe.script());
        write(&rel, recipe.text())?;
        let path = out.join(&rel);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| ImportError::Write {
                path: path.clone(),
                reason: crate::util::io_reason(&e),
            })?;
    }
    for (name, f) in &filters {
        if let Some(f) = f {
            write(
                &format!("filters/{name}.toml"),
                &format!("{header}{}", f.text),
            )?;
        }
    }
    Ok(report)
}

/// jail.conf, jail.d/*.conf, jail.local, jail.d/*.local: fail2ban's order.
fn jail_files(src: &Path) -> Vec<PathBuf> {
    let in_d = |ext: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(src.join("jail.d"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        v.sort();
        v
    };
    let mut files = vec![src.join("jail.conf")];
    files.extend(in_d("conf"));
    files.push(src.join("jail.local"));
    files.extend(in_d("local"));
    files
}

/// File and jail names safe as file names.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One enabled jail as a gaoler jail table.
fn convert_jail(
    scope: &Scope<'_>,
    filter: &str,
    filter_journalmatch: Option<String>,
    recipes: &mut Vec<jail::Recipe>,
) -> (Option<toml::Table>, Outcome, Vec<String>) {
    let keys = jail::common_keys(scope);
    let mut notes = keys.notes;
    let mut table = toml::Table::new();
    table.insert("enabled".into(), true.into());
    table.insert("filter".into(), filter.into());
    let backend = scope.get("backend").unwrap_or_default();
    let backend = backend.trim();
    if backend.starts_with("systemd") {
        let matches = scope
            .get("journalmatch")
            .filter(|j| !j.trim().is_empty())
            .or(filter_journalmatch);
        let Some(matches) = matches else {
            return (
                None,
                Outcome::Skipped,
                vec!["backend systemd without a journalmatch".into()],
            );
        };
        let (chosen, dropped) = journal_matches(&matches);
        if dropped {
            notes.push(format!(
                "journalmatch `{}`: gaoler ANDs different fields, so only the alternative `{}` is kept",
                matches.trim(),
                chosen.join(" ")
            ));
        }
        table.insert(
            "journal".into(),
            chosen
                .into_iter()
                .map(toml::Value::from)
                .collect::<Vec<_>>()
                .into(),
        );
    } else {
        let paths: Vec<toml::Value> = scope
            .get("logpath")
            .unwrap_or_default()
            .split_whitespace()
            .filter(|p| !matches!(*p, "tail" | "head"))
            .map(toml::Value::from)
            .collect();
        if paths.is_empty() {
            return (None, Outcome::Skipped, vec!["no logpath".into()]);
        }
        if !matches!(
            backend,
            "" | "auto" | "polling" | "pyinotify" | "inotify" | "gamin"
        ) {
            notes.push(format!("backend `{backend}`: gaoler follows files itself"));
        }
        table.insert("logpath".into(), paths.into());
    }
    for (k, v) in keys.table {
        table.insert(k, v);
    }
    let (all_ports, action, wanted) = jail::action(scope, &mut notes);
    if !wanted.is_empty() {
        table.insert(
            "notify".into(),
            wanted
                .iter()
                .map(|r| toml::Value::Table(r.table()))
                .collect::<Vec<_>>()
                .into(),
        );
        recipes.extend(wanted);
    }
    let ports = if all_ports {
        Vec::new()
    } else {
        jail::ports(&scope.get("port").unwrap_or_default(), &mut notes)
    };
    table.insert("ports".into(), ports.into());
    match scope.get("protocol").as_deref().map(str::trim) {
        Some("tcp") | None | Some("") => {}
        Some(p @ ("udp" | "all")) => {
            table.insert("protocol".into(), p.into());
        }
        Some(other) => notes.push(format!(
            "protocol `{other}`: gaoler bans tcp, udp or all; tcp kept"
        )),
    }
    if let Some(a) = action {
        table.insert("action".into(), a.into());
    }
    let outcome = if notes.is_empty() {
        Outcome::Converted
    } else {
        Outcome::Partial
    };
    (Some(table), outcome, notes)
}

/// journalctl's `A=1 B=2 + C=3` (AND within a group, `+` between groups) as gaoler's
/// matches (same field: alternatives; different fields: all must hold). One group is
/// kept when they cannot be combined: a lone `_COMM=` one matches whatever the unit is
/// called. The bool says whether something was dropped.
fn journal_matches(text: &str) -> (Vec<String>, bool) {
    let groups: Vec<Vec<String>> = text
        .split('+')
        .map(|g| g.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect();
    let field = |m: &String| m.split('=').next().unwrap_or("").to_string();
    // Single-match groups of one field are alternatives gaoler can express.
    if groups.iter().all(|g| g.len() == 1)
        && groups
            .iter()
            .map(|g| field(&g[0]))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 1
    {
        return (groups.into_iter().flatten().collect(), false);
    }
    if groups.len() == 1 {
        return (groups.into_iter().flatten().collect(), false);
    }
    let pick = groups
        .iter()
        .find(|g| g.len() == 1 && g[0].starts_with("_COMM="))
        .unwrap_or(&groups[0])
        .clone();
    (pick, true)
}

/// gaoler.toml from fail2ban.conf and jail.conf's [DEFAULT].
fn main_config(src: &Path, defaults: &Scope<'_>, report: &mut Report) -> toml::Table {
    let main_ini = Ini::read(&[src.join("fail2ban.conf")], true);
    let def = Scope {
        ini: &main_ini,
        section: "Definition",
        layers: vec![],
    };
    let mut daemon = toml::Table::new();
    let mut notes = Vec::new();
    if let Some(level) = def.get("loglevel") {
        let l = match level.trim().to_ascii_uppercase().as_str() {
            "CRITICAL" | "ERROR" => "error",
            "WARNING" | "WARN" => "warn",
            "NOTICE" | "INFO" => "info",
            "DEBUG" | "TRACEDEBUG" | "HEAVYDEBUG" => "debug",
            _ => "info",
        };
        daemon.insert("log_level".into(), l.into());
    }
    if let Some(age) = def.get("dbpurgeage") {
        if let Ok(Some(s)) = jail::seconds(&age) {
            daemon.insert("dbpurgeage".into(), jail::duration_text(s).into());
        }
    }
    let mut main = toml::Table::new();
    main.insert("daemon".into(), daemon.into());
    let mut fw = toml::Table::new();
    fw.insert("backend".into(), "nftables".into());
    main.insert("firewall".into(), fw.into());
    let keys = jail::common_keys(defaults);
    notes.extend(keys.notes);
    main.insert("defaults".into(), keys.table.into());
    report.add(
        "config",
        "gaoler.toml",
        if notes.is_empty() {
            Outcome::Converted
        } else {
            Outcome::Partial
        },
        notes,
    );
    main
}

#[cfg(test)]
mod tests;
