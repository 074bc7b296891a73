//! fail2ban jail options to gaoler's jail keys: times, ports, ignoreip, bantime
//! increment, backend and actions. Each value that cannot be carried over leaves a
//! note for the report instead.

use super::ini::Scope;

/// A fail2ban time (`600`, `10m`, `1h30m`, `2 days`, `-1`) in seconds; `None` for
/// permanent (a negative time).
pub fn seconds(value: &str) -> Result<Option<u64>, String> {
    let v = value.trim();
    if v.starts_with('-') {
        return Ok(None);
    }
    let mut total = 0f64;
    let mut rest = v;
    if rest.is_empty() {
        return Err("empty time".into());
    }
    while !rest.is_empty() {
        rest = rest.trim_start();
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("`{v}` is not a time"))?;
        rest = rest[n_end..].trim_start();
        let u_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = rest[..u_end].to_ascii_lowercase();
        rest = &rest[u_end..];
        let scale = match unit.as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "mi" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "week" | "weeks" => 604_800.0,
            "mo" | "mon" | "month" | "months" => 2_629_800.0,
            "y" | "yy" | "year" | "years" => 31_557_600.0,
            _ => return Err(format!("`{v}` has an unknown time unit `{unit}`")),
        };
        total += n * scale;
    }
    Ok(Some(total.round() as u64))
}

/// Seconds in gaoler's shortest form: `1w`, `2d`, `10m`, `45s`.
pub fn duration_text(secs: u64) -> String {
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs > 0 && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// fail2ban's booleans.
pub fn boolean(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" | "enabled" => Some(true),
        "false" | "no" | "0" | "off" | "disabled" => Some(false),
        _ => None,
    }
}

/// `name[k=v, k2="v 2"]` split into the name and its options.
pub fn filter_spec(value: &str) -> (String, Vec<(String, String)>) {
    let v = value.trim();
    let Some((name, rest)) = v.split_once('[') else {
        return (v.to_string(), Vec::new());
    };
    let body = rest.trim_end().trim_end_matches(']');
    let mut opts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut parts = Vec::new();
    for c in body.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            opts.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (name.trim().to_string(), opts)
}

/// The jail keys of one fail2ban jail (or of `[DEFAULT]`), as a TOML table.
pub struct JailKeys {
    pub table: toml::Table,
    pub notes: Vec<String>,
}

/// Maps the options every jail (and `[DEFAULT]`) may carry.
pub fn common_keys(scope: &Scope<'_>) -> JailKeys {
    let mut table = toml::Table::new();
    let mut notes = Vec::new();
    if let Some(v) = scope.get("maxretry") {
        match v.trim().parse::<i64>() {
            Ok(n) => {
                table.insert("maxretry".into(), n.into());
            }
            Err(_) => notes.push(format!("maxretry `{v}` is not a number; left out")),
        }
    }
    for key in ["findtime", "bantime"] {
        if let Some(v) = scope.get(key) {
            match seconds(&v) {
                Ok(Some(s)) => {
                    table.insert(key.into(), duration_text(s).into());
                }
                Ok(None) if key == "bantime" => {
                    table.insert(key.into(), "permanent".into());
                }
                Ok(None) => notes.push(format!("{key} `{v}` is negative; left out")),
                Err(e) => notes.push(format!("{key}: {e}; left out")),
            }
        }
    }
    if let Some(v) = scope.get("ignoreip") {
        let mut list = Vec::new();
        for item in v.split([' ', ',', '\n', '\t']).filter(|s| !s.is_empty()) {
            if crate::config::parse_net(item).is_ok() {
                list.push(toml::Value::from(item));
            } else {
                notes.push(format!(
                    "ignoreip `{item}` is not an address or network (gaoler never resolves names); left out"
                ));
            }
        }
        table.insert("ignoreip".into(), list.into());
    }
    if let Some(b) = scope.get("ignoreself").as_deref().and_then(boolean) {
        table.insert("ignoreself".into(), b.into());
    }
    if scope
        .get("ignorecommand")
        .is_some_and(|c| !c.trim().is_empty())
    {
        notes.push("ignorecommand has no equivalent; left out".into());
    }
    if let Some(tz) = scope.get("logtimezone").filter(|t| !t.trim().is_empty()) {
        table.insert("logtimezone".into(), tz.trim().into());
    }
    if let Some(enc) = scope.get("logencoding") {
        let e = enc.trim().to_ascii_lowercase();
        if !matches!(e.as_str(), "" | "auto" | "utf-8" | "utf8" | "ascii") {
            notes.push(format!(
                "logencoding `{enc}`: gaoler reads bytes and matches ASCII; left out"
            ));
        }
    }
    increment(scope, &mut table, &mut notes);
    JailKeys { table, notes }
}

fn increment(scope: &Scope<'_>, table: &mut toml::Table, notes: &mut Vec<String>) {
    let Some(enabled) = scope.get("bantime.increment").as_deref().and_then(boolean) else {
        return;
    };
    let mut inc = toml::Table::new();
    inc.insert("enabled".into(), enabled.into());
    if let Some(f) = scope.get("bantime.factor") {
        match f.trim().parse::<f64>() {
            Ok(f) => {
                inc.insert("factor".into(), f.into());
            }
            Err(_) => notes.push(format!("bantime.factor `{f}` is not a number; left out")),
        }
    }
    for (from, to) in [
        ("bantime.maxtime", "maxtime"),
        ("bantime.rndtime", "rndtime"),
    ] {
        if let Some(Ok(Some(s))) = scope
            .get(from)
            .filter(|v| !v.trim().is_empty())
            .map(|v| seconds(&v))
        {
            inc.insert(to.into(), duration_text(s).into());
        }
    }
    if let Some(m) = scope
        .get("bantime.multipliers")
        .filter(|m| !m.trim().is_empty())
    {
        let parsed: Result<Vec<toml::Value>, _> = m
            .split_whitespace()
            .map(|x| x.parse::<f64>().map(toml::Value::from))
            .collect();
        match parsed {
            Ok(list) => {
                inc.insert("multipliers".into(), list.into());
            }
            Err(_) => notes.push(format!(
                "bantime.multipliers `{m}` are not numbers; left out"
            )),
        }
    }
    if scope
        .get("bantime.formula")
        .is_some_and(|f| !f.trim().is_empty())
    {
        notes.push("bantime.formula (a Python expression) has no equivalent: gaoler multiplies by factor (or multipliers) up to maxtime".into());
    }
    if scope
        .get("bantime.overalljails")
        .as_deref()
        .and_then(boolean)
        == Some(true)
    {
        notes.push("bantime.overalljails: gaoler counts a target's bans per jail; enable [recidive] for bans across jails".into());
    }
    table.insert("bantime_increment".into(), inc.into());
}

/// `port` (`ssh`, `http,https`, `1000:2000`, `0:65535`) as gaoler's `ports`.
pub fn ports(value: &str, notes: &mut Vec<String>) -> Vec<toml::Value> {
    let mut out = Vec::new();
    for item in value.split([',', ' ', '\n']).filter(|s| !s.is_empty()) {
        let item = item.replace(':', "-");
        if matches!(item.as_str(), "0-65535" | "1-65535" | "all" | "any") {
            return Vec::new();
        }
        match crate::config::parse_port(&item) {
            Ok(_) => out.push(item.into()),
            Err(e) => notes.push(format!("port `{item}`: {e}; left out")),
        }
    }
    out
}

/// A notification recipe (docs/notify.md) an action maps to: the import writes the
/// script into the new configuration (`notify/NAME`) and a `[[notify]]` that runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// fail2ban's `sendmail*`, `mail*` (`-whois`, `-lines`, `-matches`): one mail a
    /// ban to `dest`, with the lines (and whois when installed).
    Mail { dest: String },
    /// fail2ban's `abuseipdb`: a report a ban.
    AbuseIpdb,
}

impl Recipe {
    /// The script's name, in `notify/`.
    pub fn script(&self) -> &'static str {
        match self {
            Recipe::Mail { .. } => "mail",
            Recipe::AbuseIpdb => "abuseipdb",
        }
    }

    /// The script's text, as shipped.
    pub fn text(&self) -> &'static str {
        match self {
            Recipe::Mail { .. } => include_str!("../../notify/mail"),
            Recipe::AbuseIpdb => include_str!("../../notify/abuseipdb"),
        }
    }

    /// The `[[notify]]` table that runs it.
    pub fn table(&self) -> toml::Table {
        let path = format!("notify/{}", self.script());
        let argv: Vec<&str> = match self {
            Recipe::Mail { dest } => vec![
                &path,
                dest,
                "{ip}",
                "{jail}",
                "{count}",
                "{bantime}",
                "{matches}",
            ],
            Recipe::AbuseIpdb => vec![&path, "{ip}", "{jail}", "{matches}"],
        };
        let mut t = toml::Table::new();
        t.insert("on".into(), vec![toml::Value::from("ban")].into());
        t.insert(
            "exec".into(),
            argv.into_iter()
                .map(toml::Value::from)
                .collect::<Vec<_>>()
                .into(),
        );
        t.insert("timeout".into(), "30s".into());
        t
    }
}

/// The value of `name=` in an action's options (`dest="root@example.org"`).
fn option(text: &str, name: &str) -> Option<String> {
    let at = text.find(&format!("{name}="))? + name.len() + 1;
    let rest = &text[at..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([',', ']', ' ', '\n']).next()?,
    };
    let value = value.trim();
    (!value.is_empty() && !value.contains("%(")).then(|| value.to_string())
}

/// The firewall side of `action`/`banaction`: all ports or listed ones, drop or
/// reject; mail and AbuseIPDB reports become notification recipes; what gaoler does
/// not do (Cloudflare, X-ARF, blocklist reports) becomes notes.
pub fn action(
    scope: &Scope<'_>,
    notes: &mut Vec<String>,
) -> (bool, Option<&'static str>, Vec<Recipe>) {
    let raw = format!(
        "{} {}",
        scope.get("action").unwrap_or_default(),
        scope.get("banaction").unwrap_or_default()
    );
    let text = raw.to_ascii_lowercase();
    let all_ports = text.contains("allports");
    let reject = text.contains("reject");
    let recipes = recipes_of(&raw, scope.get("destemail"), notes);
    (all_ports, reject.then_some("reject"), recipes)
}

/// The recipes the actions in `raw` map to (notes say what became of each);
/// `destemail` is the jail's, for a mail action without `dest=`.
pub fn recipes_of(raw: &str, destemail: Option<String>, notes: &mut Vec<String>) -> Vec<Recipe> {
    let text = raw.to_ascii_lowercase();
    let mut recipes = Vec::new();
    if text.contains("mail") {
        let dest = option(raw, "dest")
            .or_else(|| destemail.map(|d| d.trim().to_string()))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "root".to_string());
        recipes.push(Recipe::Mail { dest });
        notes.push("action: mail on ban becomes the mail notification recipe (notify/mail, needs a sendmail)".into());
    }
    if text.contains("abuseipdb") {
        recipes.push(Recipe::AbuseIpdb);
        let category = option(raw, "abuseipdb_category")
            .map(|c| format!(" and ABUSEIPDB_CATEGORIES={c}"))
            .unwrap_or_default();
        notes.push(format!(
            "action: abuseipdb becomes the AbuseIPDB recipe (notify/abuseipdb, needs curl): put ABUSEIPDB_KEY=...{category} in /etc/gaoler/abuseipdb.env (mode 0600); the key is not copied"
        ));
    }
    for (word, what) in [
        ("xarf", "X-ARF abuse reports"),
        ("cloudflare", "Cloudflare API bans"),
        ("badips", "badips.com reports"),
        ("blocklist_de", "blocklist.de reports"),
    ] {
        if text.contains(word) {
            notes.push(format!(
                "action: {what} is not something gaoler does; only the firewall ban is kept (an exec notifier can call its API: docs/notify.md)"
            ));
        }
    }
    recipes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(seconds("600"), Ok(Some(600)));
        assert_eq!(seconds("10m"), Ok(Some(600)));
        assert_eq!(seconds("1h30m"), Ok(Some(5400)));
        assert_eq!(seconds("2 days"), Ok(Some(172_800)));
        assert_eq!(seconds("-1"), Ok(None));
        assert!(seconds("soon").is_err());
        assert_eq!(duration_text(5400), "90m");
        assert_eq!(duration_text(604_800), "1w");
        assert_eq!(duration_text(45), "45s");
    }

    #[test]
    fn filter_specs() {
        assert_eq!(filter_spec("sshd"), ("sshd".into(), vec![]));
        assert_eq!(
            filter_spec("sshd[mode=aggressive, publickey=\"invalid\"]"),
            (
                "sshd".into(),
                vec![
                    ("mode".into(), "aggressive".into()),
                    ("publickey".into(), "invalid".into())
                ]
            )
        );
    }

    #[test]
    fn port_lists() {
        let mut notes = Vec::new();
        assert_eq!(
            ports("ssh,http, 8000:8080", &mut notes),
            vec![toml::Value::from("ssh"), "http".into(), "8000-8080".into()]
        );
        assert!(ports("0:65535", &mut notes).is_empty());
        assert!(notes.is_empty());
        ports("nosuchservice", &mut notes);
        assert_eq!(notes.len(), 1);
    }
}
