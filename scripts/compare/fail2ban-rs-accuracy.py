#!/usr/bin/env python3
"""Detection recall of fail2ban-rs's built-in filters on fail2ban's annotated test corpus,
default mode only, with the line-selection rules of gaoler's tests/it/accuracy.rs
(addFILE, filterOptions blocks, test.condition / constraint, test.prefix-line, host names
and 0.0.0.0 left out, the two REFUSED lines counted apart).

fail2ban-rs is driven through `fail2ban-rs dry-run -c CFG LINE.log -j JAIL`, one process
per corpus line (dry-run only prints per-address counts, so feeding lines one at a time
is the only way to tie a match to its line). CFG holds one jail built from the filter's
`gen-config` patterns, re-quoted as TOML basic strings (gen-config prints them as
'...' literals, which is invalid TOML for patterns holding a quote, e.g. mysqld), with
ignoreip = [] and ignoreself = false (the default ignore list drops 127.0.0.1 and ::1).
dry-run matches every line whatever its time (an unparsable or old timestamp only
becomes 0 for the would-ban window), so no time option is needed.

Usage: scripts/compare/fail2ban-rs-accuracy.py [--bin FAIL2BAN_RS] [--out table.md] [-v]
"""
import concurrent.futures as cf
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile

BIN = "fail2ban-rs"  # `cargo install fail2ban-rs --version 1.5.4`; or --bin
STOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "fail2ban-stock")  # unpacked by scripts/test
CORPUS = STOCK + "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs"
FILTER_D = STOCK + "/etc/fail2ban/filter.d"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "table.md")
VERBOSE = "-v" in sys.argv
if "--bin" in sys.argv:
    BIN = sys.argv[sys.argv.index("--bin") + 1]
if "--out" in sys.argv:
    OUT = sys.argv[sys.argv.index("--out") + 1]

# Corpus file -> fail2ban-rs built-in filter, where the names differ.
COUNTERPART = {
    "drupal-auth": "drupal",
    "haproxy-http-auth": "haproxy",
    "mysqld-auth": "mysqld",
    "nginx-http-auth": "nginx-auth",
    "traefik-auth": "traefik",
}

# Same as accuracy.rs: lines gaoler refuses as indistinguishable from a forgery are
# counted apart (not in attacks), so the denominators match gaoler's table.
REFUSED = [
    ("pam-generic", b"ruser= rhost=192.0.2.2 user=test rhost=192.0.2.152"),
    ("nginx-http-auth", b'host: "localhost:8443"": was not found'),
]

FRAMING_KEYS = {"logtype", "logging", "test.condition", "test.prefix-line"}


def cases(name, out):
    """Annotated lines of a corpus file, following addFILE: (line bytes, expect, options)."""
    options = [{}]
    pending = None
    with open(os.path.join(CORPUS, name), "rb") as f:
        data = f.read()
    for raw in data.split(b"\n"):
        text = raw.decode("utf-8", "replace")
        at = text.find("filterOptions:")
        if at >= 0 and text.startswith("#"):
            v = json.loads(text[at + 14:].strip())
            options = v if isinstance(v, list) else [v]
            continue
        if text.startswith("# addFILE:"):
            cases(text[len("# addFILE:"):].strip().strip('"'), out)
            continue
        at = text.find("failJSON:")
        if at >= 0 and text.startswith("#"):
            try:
                pending = json.loads(text[at + 9:].strip())
            except ValueError:
                pending = None
            continue
        if text.startswith("#") or not text.strip():
            continue
        if pending is not None:
            out.append((raw, pending, list(options)))
            pending = None
    return out


def holds(cond, name, mode):
    """fail2ban's conditions in the corpus's forms: name == 'x', opts.get('mode') != 'x'."""
    if "!=" in cond:
        lhs, rhs = cond.split("!=", 1)
        equal = False
    else:
        lhs, rhs = cond.split("==", 1)
        equal = True
    value = rhs.strip().strip("'\"")
    lhs = lhs.strip()
    if lhs == "name":
        actual = name
    elif lhs == "opts.get('mode')":
        actual = mode
    else:
        raise ValueError(f"condition {cond!r} not understood")
    return (actual == value) == equal


def default_mode(name):
    """fail2ban's default mode for the corpus file's filter (gaoler's filters use the same)."""
    try:
        for l in open(os.path.join(FILTER_D, name + ".conf"), encoding="utf-8"):
            m = re.match(r"\s*mode\s*=\s*(\S+)\s*$", l)
            if m:
                return m.group(1)
    except OSError:
        pass
    return None


def default_lines(name):
    """The lines accuracy.rs tests in the default mode: [(line bytes with prefix, expect)]."""
    dmode = default_mode(name)
    chosen_lines = []
    for raw, expect, options in cases(name, []):
        chosen = None
        for o in options:
            if not isinstance(o, dict):
                continue
            cond = o.get("test.condition")
            if cond and not holds(cond, name, None):
                continue
            if any(k != "mode" and k not in FRAMING_KEYS for k in o):
                continue
            m = o.get("mode")
            if m == dmode:
                m = None
            if m is None:
                chosen = o
                break
        if chosen is None:
            continue
        c = expect.get("constraint")
        if c and not holds(c, name, chosen.get("mode")):
            continue
        prefix = chosen.get("test.prefix-line")
        line = (prefix.encode("utf-8") if prefix else b"") + raw
        chosen_lines.append((line, expect))
    return chosen_lines


def canon(h):
    """Canonical address (IPv4-mapped IPv6 -> IPv4), or None for names/unparsable."""
    if not isinstance(h, str) or "%" in h:
        return None
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def gen_patterns(filt):
    """(date_format, [patterns]) of a built-in filter, from `gen-config`."""
    out = subprocess.run([BIN, "gen-config", filt], capture_output=True, text=True, check=True).stdout
    date_format = re.search(r'^date_format = "([^"]*)"', out, re.M).group(1)
    body = out.split("filter = [", 1)[1].rsplit("]", 1)[0]
    pats = []
    for l in body.split("\n"):
        l = l.strip()
        if not l:
            continue
        assert l.startswith("'") and l.endswith("',"), l
        pats.append(l[1:-2])
    return date_format, pats


def write_config(filt, path, state_dir):
    date_format, pats = gen_patterns(filt)
    toml = [
        "[global]",
        f"state_file = {json.dumps(os.path.join(state_dir, 'state.bin'))}",
        f"socket_path = {json.dumps(os.path.join(state_dir, 'f2brs.sock'))}",
        "",
        f"[jail.{json.dumps(filt)}]",
        "enabled = true",
        'log_path = "/dev/null"',
        f"date_format = {json.dumps(date_format)}",
        "ignoreip = []",
        "ignoreself = false",
        "filter = [",
    ]
    toml += [f"    {json.dumps(p, ensure_ascii=False)}," for p in pats]
    toml.append("]")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(toml) + "\n")


IP_LINE = re.compile(r"^    (\S+): (\d+) failures", re.M)


def run_line(cfg, filt, line, workdir, i):
    log = os.path.join(workdir, f"line{i}.log")
    with open(log, "wb") as f:
        f.write(line + b"\n")
    r = subprocess.run([BIN, "dry-run", "-c", cfg, "-j", filt, log], capture_output=True)
    os.unlink(log)
    out = r.stdout.decode("utf-8", "replace")
    if r.returncode != 0 or "Jail: " not in out:
        raise RuntimeError(f"dry-run failed for {filt}: {r.stderr.decode()[:500]}")
    return [h for h, _ in IP_LINE.findall(out)]


def measure(name, filt, workdir):
    cfg = os.path.join(workdir, f"{filt}.toml")
    write_config(filt, cfg, workdir)
    lines = default_lines(name)
    with cf.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        got = list(ex.map(lambda a: run_line(cfg, filt, a[1][0], workdir, a[0]), enumerate(lines)))
    s = dict(caught=0, attacks=0, fp=0, benign=0, wrong=0, names=0, refused=0, refused_caught=0)
    notes = []
    for (line, expect), hosts in zip(lines, got):
        text = line.decode("utf-8", "replace")
        want = expect.get("match")
        if want is True:
            h = expect.get("host")
            ip = canon(h) if h is not None else None
            if h is not None and (ip is None or ip.is_unspecified):
                s["names"] += 1
                continue
            if any(f == name and frag in line for f, frag in REFUSED):
                s["refused"] += 1
                s["refused_caught"] += bool(hosts)
                notes.append(f"REFUSED-LINE {'caught ' + ','.join(hosts) if hosts else 'missed'}: {text[:200]}")
                continue
            s["attacks"] += 1
            if hosts:
                s["caught"] += 1
                if ip is not None and all(canon(x) != ip for x in hosts):
                    s["wrong"] += 1
                    notes.append(f"WRONG {','.join(hosts)} (want {h}): {text[:200]}")
            else:
                notes.append(f"MISS: {text[:200]}")
        elif want is False:
            s["benign"] += 1
            if hosts:
                s["fp"] += 1
                notes.append(f"FP {','.join(hosts)}: {text[:200]}")
    return s, notes


def main():
    filters = set()
    for l in subprocess.run([BIN, "list-filters"], capture_output=True, text=True, check=True).stdout.splitlines():
        if l.strip():
            filters.add(l.split()[0])
    names = sorted(
        n for n in os.listdir(CORPUS)
        if os.path.isfile(os.path.join(CORPUS, n)) and not n.startswith("zzz-") and n != "sshd-journal"
    )
    rows = ["| corpus file | fail2ban-rs filter | caught/attacks | recall | false positives/benign | wrong address |",
            "| --- | --- | --- | --- | --- | --- |"]
    without, leftout, refused = [], [], []
    tot = dict(caught=0, attacks=0, fp=0, benign=0, wrong=0)
    with tempfile.TemporaryDirectory(prefix="f2brs-measure-") as workdir:
        for name in names:
            filt = COUNTERPART.get(name, name)
            if filt not in filters:
                without.append(name)
                continue
            s, notes = measure(name, filt, workdir)
            recall = s["caught"] / s["attacks"] if s["attacks"] else 1.0
            rows.append(f"| {name} | {filt} | {s['caught']}/{s['attacks']} | {recall:.2f} | "
                        f"{s['fp']}/{s['benign']} | {s['wrong']} |")
            for k in tot:
                tot[k] += s[k]
            if s["names"]:
                leftout.append(f"{name} {s['names']}")
            if s["refused"]:
                refused.append(f"{name}: {s['refused_caught']}/{s['refused']} caught")
            if VERBOSE:
                for n in notes:
                    print(f"[{name}] {n}", file=sys.stderr)
    recall = tot["caught"] / tot["attacks"] if tot["attacks"] else 1.0
    text = "\n".join(rows) + "\n\n"
    text += (f"Together: {tot['caught']} of {tot['attacks']} attacks caught (recall {recall:.2f}), "
             f"{tot['fp']} false positives on {tot['benign']} benign lines, {tot['wrong']} wrong addresses.\n")
    text += ("Left out (expected host is a name or 0.0.0.0): " + (", ".join(leftout) or "none") + ".\n")
    text += ("Counted apart as in gaoler's table (lines gaoler refuses as ambiguous with a forgery): "
             + ("; ".join(refused) or "none") + ".\n")
    text += "Corpus files without a fail2ban-rs built-in filter: " + ", ".join(without) + ".\n"
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
