//! Where a command's keys are, learned from the server's own command table.
//!
//! A cluster client must know which arguments of a command are keys, to send
//! the command to the node that serves their slot. The server describes its
//! commands in the reply to `COMMAND`: since Redis 7 with *key
//! specifications* (element 9), before that with a first key, last key and
//! step (elements 4–6). [`CommandTable`] reads that reply once and answers,
//! per command, with the positions of its keys — without allocating.
//!
//! ```text
//! COMMAND reply ──▶ CommandTable::from_reply ──▶ name → { readonly, how to find the keys }
//! ["GET", "k"]  ──▶ CommandTable::key_positions ──▶ [1], Known { readonly: true }
//! ```
//!
//! A few commands are built in, because no table (or no table a server
//! before 7 sends) describes them well enough: they are right even with
//! [`CommandTable::fallback`], the table of a server that refused `COMMAND`.
//!
//! | command | keys |
//! | --- | --- |
//! | `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `FCALL`, `FCALL_RO` | `numkeys` at 2, then that many |
//! | `ZUNION`, `ZINTER`, `ZDIFF` | `numkeys` at 1, then that many |
//! | `ZUNIONSTORE`, `ZINTERSTORE`, `ZDIFFSTORE` | the destination at 1, `numkeys` at 2, then that many |
//! | `XREAD`, `XREADGROUP` | after the options, the first half of what follows `STREAMS` |
//! | `SORT` | the key at 1, and the argument of the last `STORE` |
//! | `MIGRATE` | the key at 3, or everything after `KEYS` when the key at 3 is empty |
//!
//! Each follows what the server itself does to find the keys (its
//! `getkeys` procedures): a `numkeys` that is not a positive integer, or
//! larger than what follows, gives no keys at all, as does a `STREAMS` with
//! an odd number of arguments after it.
//!
//! Channels count as keys: key specifications flagged `not_key` (the
//! channels of `SPUBLISH`, `SSUBSCRIBE`, `SUNSUBSCRIBE`) are used, because a
//! cluster routes sharded pub/sub by the channel's slot.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{describe, unexpected};
use crate::resp::number::{parse_i64, Form};
use crate::{Error, Result, ServerError, Value};

/// The longest command name (`name|subcommand` included) looked up; longer
/// names are no command the server has.
const MAX_NAME: usize = 64;

/// What the table knows of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommandKind {
    /// The command is not in the table: its keys are unknown, so it may be
    /// sent to any node.
    Unknown,
    /// The command is in the table; the positions written are all its keys
    /// (none: it may be sent to any node).
    Known {
        /// The server flags it `readonly`: a replica may serve it.
        readonly: bool,
    },
}

/// Where the keys of each command are: command name (lower case; a
/// subcommand as `object|encoding`) → what is known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommandTable {
    commands: HashMap<Vec<u8>, CommandInfo, BuildHasherDefault<Fnv>>,
}

/// One command of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CommandInfo {
    /// Flagged `readonly` by the server.
    readonly: bool,
    /// The command has subcommands, looked up as `name|sub`.
    has_subcommands: bool,
    /// How to find its keys.
    keys: KeyRule,
}

/// How a command's keys are found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyRule {
    /// The legacy description (Redis 6 and earlier, or no key
    /// specifications): keys at `first`, `first + step`, ... up to `last`,
    /// which counts from the end when negative. `first` 0: no keys.
    Range { first: i64, last: i64, step: i64 },
    /// Redis 7 key specifications, each giving some of the keys.
    Specs(Vec<KeySpec>),
    /// A built-in rule.
    Builtin(Builtin),
}

/// One key specification: where to start, then how to find the keys from
/// there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeySpec {
    begin: BeginSearch,
    find: FindKeys,
}

/// A key specification's `begin_search`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BeginSearch {
    /// The keys start at this argument index.
    Index(i64),
    /// The keys start after `keyword` (any case), searched for from
    /// `start_from`, backwards from the end when negative.
    Keyword { keyword: Vec<u8>, start_from: i64 },
    /// Not describable (or a type this code does not know): gives no key.
    Unknown,
}

/// A key specification's `find_keys`, relative to where the search began.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FindKeys {
    /// Keys every `key_step` arguments up to `last_key` (relative; when
    /// negative, counted from the end, or — with a `limit` above 1 — the
    /// `1/limit` part of the remaining arguments).
    Range {
        last_key: i64,
        key_step: i64,
        limit: i64,
    },
    /// The argument at `key_num_idx` gives how many keys there are; they
    /// start at `first_key`, one every `key_step` arguments.
    KeyNum {
        key_num_idx: i64,
        first_key: i64,
        key_step: i64,
    },
    /// Not describable (or a type this code does not know): gives no key.
    Unknown,
}

/// The built-in rules, for the commands a table cannot describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    /// A `numkeys` argument at `count_at`, that many keys right after it,
    /// and a destination key at `dest` when there is one.
    NumKeys {
        dest: Option<usize>,
        count_at: usize,
    },
    /// `XREAD` / `XREADGROUP`: the first half of what follows `STREAMS`.
    Streams,
    /// `SORT`: the key, and the `STORE` destination.
    Sort,
    /// `MIGRATE`: the key at 3, or what follows `KEYS`.
    Migrate,
}

/// The built-in commands: name, `readonly` when no table says, rule.
const BUILTINS: &[(&str, bool, Builtin)] = &[
    ("eval", false, EVAL),
    ("evalsha", false, EVAL),
    ("eval_ro", true, EVAL),
    ("evalsha_ro", true, EVAL),
    ("fcall", false, EVAL),
    ("fcall_ro", true, EVAL),
    ("zunion", true, ZUNION),
    ("zinter", true, ZUNION),
    ("zdiff", true, ZUNION),
    ("zunionstore", false, ZUNIONSTORE),
    ("zinterstore", false, ZUNIONSTORE),
    ("zdiffstore", false, ZUNIONSTORE),
    ("xread", true, Builtin::Streams),
    ("xreadgroup", false, Builtin::Streams),
    ("sort", false, Builtin::Sort),
    ("migrate", false, Builtin::Migrate),
];

/// `EVAL script numkeys key...`.
const EVAL: Builtin = Builtin::NumKeys {
    dest: None,
    count_at: 2,
};
/// `ZUNION numkeys key...`.
const ZUNION: Builtin = Builtin::NumKeys {
    dest: None,
    count_at: 1,
};
/// `ZUNIONSTORE destination numkeys key...`.
const ZUNIONSTORE: Builtin = Builtin::NumKeys {
    dest: Some(1),
    count_at: 2,
};

impl CommandTable {
    /// The table described by a reply to `COMMAND` (or `COMMAND INFO`, whose
    /// nil entries are skipped): RESP2 arrays or RESP3 maps and sets, in
    /// the shapes of Redis 6 (name, arity, flags, first key, last key, step,
    /// ...) and Redis 7 (and key specifications and subcommands).
    ///
    /// An entry without those first six fields rejects the reply with a
    /// protocol error; a key specification of a type this code does not
    /// know only gives no keys. The built-in rules replace what the
    /// reply says of their commands.
    pub(crate) fn from_reply(reply: &Value) -> Result<CommandTable> {
        let entries = match reply.without_attributes() {
            Value::Array(items) | Value::Set(items) => items,
            other => return Err(refusal_or_unexpected(other)),
        };
        let mut table = CommandTable {
            commands: HashMap::with_capacity_and_hasher(entries.len() * 2, Default::default()),
        };
        for (index, entry) in entries.iter().enumerate() {
            let what = || format!("COMMAND entry #{}", index);
            table.add_entry(entry, true, &what)?;
        }
        table.add_builtins();
        Ok(table)
    }

    /// The table with only the built-in rules: every other command is
    /// [`CommandKind::Unknown`].
    pub(crate) fn fallback() -> CommandTable {
        let mut table = CommandTable {
            commands: HashMap::with_capacity_and_hasher(BUILTINS.len(), Default::default()),
        };
        table.add_builtins();
        table
    }

    /// Writes into `out` (cleared first) the positions in `args` of every
    /// key of the command, ascending and each once; `args[0]` is the
    /// command name, in any case. A command with subcommands is looked up
    /// as `name|sub` when that entry exists.
    ///
    /// Never panics, whatever the arguments: a `numkeys` that is not a
    /// number, positions past the end, a missing keyword give the keys that
    /// can be found, or none. Allocates nothing beyond growing `out`.
    pub(crate) fn key_positions(&self, args: &[&[u8]], out: &mut Vec<usize>) -> CommandKind {
        out.clear();
        let info = match self.lookup(args) {
            Some(info) => info,
            None => return CommandKind::Unknown,
        };
        info.keys.find(args, out);
        sort_and_dedup(out);
        CommandKind::Known {
            readonly: info.readonly,
        }
    }

    /// Whether the command named `name` has exactly one key, its first
    /// argument (`GET`, `SET`, `INCR`, `HSET`...), whatever its other
    /// arguments: the shape the quick path routes without the planner.
    pub(crate) fn key_is_first_argument(&self, name: &[u8]) -> bool {
        match self.lookup(&[name]) {
            Some(info) => !info.has_subcommands && info.keys.is_first_argument_only(),
            None => false,
        }
    }

    /// The entry for `args`: the subcommand's when there is one, else the
    /// command's.
    fn lookup(&self, args: &[&[u8]]) -> Option<&CommandInfo> {
        let mut name = [0u8; MAX_NAME];
        let len = lowercase_into(args.first()?, &mut name)?;
        let info = self.commands.get(&name[..len])?;
        if info.has_subcommands && args.len() >= 2 {
            if let Some(sub) = self.lookup_subcommand(&mut name, len, args[1]) {
                return Some(sub);
            }
        }
        Some(info)
    }

    /// The entry `name|sub`, where `name[..len]` already holds the name.
    fn lookup_subcommand(
        &self,
        name: &mut [u8; MAX_NAME],
        len: usize,
        sub: &[u8],
    ) -> Option<&CommandInfo> {
        let bar = name.get_mut(len)?;
        *bar = b'|';
        let sub_len = lowercase_into(sub, &mut name[len + 1..])?;
        self.commands.get(&name[..len + 1 + sub_len])
    }

    /// Adds one entry of a `COMMAND` reply (and, when `with_subcommands`,
    /// its subcommands); `what` names it in errors.
    fn add_entry(
        &mut self,
        entry: &Value,
        with_subcommands: bool,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        if entry.without_attributes().is_nil() {
            return Ok(());
        }
        let parsed = parse_entry(entry).ok_or_else(|| {
            unexpected(
                format!(
                    "{} to be [name, arity, flags, first key, last key, step, ...]",
                    what()
                ),
                describe(entry),
            )
        })?;
        let has_subcommands = with_subcommands && !parsed.subcommands.is_empty();
        if has_subcommands {
            for (i, sub) in parsed.subcommands.iter().enumerate() {
                let what = || format!("subcommand #{} of {}", i, what());
                self.add_entry(sub, false, &what)?;
            }
        }
        self.commands.insert(
            parsed.name,
            CommandInfo {
                readonly: parsed.readonly,
                has_subcommands,
                keys: parsed.keys,
            },
        );
        Ok(())
    }

    /// Puts the built-in rules in place of what the table says of their
    /// commands, keeping the table's `readonly` flag when it has one.
    fn add_builtins(&mut self) {
        for &(name, readonly, rule) in BUILTINS {
            self.commands
                .entry(name.as_bytes().to_vec())
                .and_modify(|info| info.keys = KeyRule::Builtin(rule))
                .or_insert(CommandInfo {
                    readonly,
                    has_subcommands: false,
                    keys: KeyRule::Builtin(rule),
                });
        }
    }
}

/// Copies `name` into `buf` in ASCII lower case; `None` if it does not fit.
fn lowercase_into(name: &[u8], buf: &mut [u8]) -> Option<usize> {
    let dst = buf.get_mut(..name.len())?;
    for (d, s) in dst.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    Some(name.len())
}

/// Puts positions found by several rules in ascending order, each once
/// (in place: `sort_unstable` does not allocate).
fn sort_and_dedup(out: &mut Vec<usize>) {
    if out.windows(2).any(|w| w[0] >= w[1]) {
        out.sort_unstable();
        out.dedup();
    }
}

/// A `COMMAND` entry, read.
struct ParsedEntry<'a> {
    name: Vec<u8>,
    readonly: bool,
    keys: KeyRule,
    subcommands: &'a [Value],
}

/// Reads `[name, arity, flags, first, last, step, acl?, tips?, key specs?,
/// subcommands?]`; `None` when the first six are not there or not of their
/// types, or the key specifications or subcommands are not lists.
fn parse_entry(entry: &Value) -> Option<ParsedEntry<'_>> {
    let fields = entry.as_slice()?;
    if fields.len() < 6 {
        return None;
    }
    let name = fields[0].as_bytes()?.to_ascii_lowercase();
    fields[1].as_i64()?;
    let readonly = fields[2]
        .as_slice()?
        .iter()
        .any(|flag| flag.as_bytes() == Some(&b"readonly"[..]));
    let (first, last, step) = (
        fields[3].as_i64()?,
        fields[4].as_i64()?,
        fields[5].as_i64()?,
    );
    let specs = match fields.get(8) {
        Some(specs) => specs.as_slice()?.iter().map(parse_key_spec).collect(),
        None => Vec::new(),
    };
    let subcommands = match fields.get(9) {
        Some(subs) => subs.as_slice()?,
        None => &[],
    };
    let keys = if specs.is_empty() {
        KeyRule::Range { first, last, step }
    } else {
        KeyRule::Specs(specs)
    };
    Some(ParsedEntry {
        name,
        readonly,
        keys,
        subcommands,
    })
}

/// Reads a key specification (`{flags, begin_search, find_keys, ...}`, a
/// RESP3 map or a RESP2 array of pairs). Anything missing or unknown makes
/// that part [`Unknown`](BeginSearch::Unknown).
fn parse_key_spec(spec: &Value) -> KeySpec {
    KeySpec {
        begin: field(spec, b"begin_search")
            .and_then(parse_begin_search)
            .unwrap_or(BeginSearch::Unknown),
        find: field(spec, b"find_keys")
            .and_then(parse_find_keys)
            .unwrap_or(FindKeys::Unknown),
    }
}

/// `{type: index, spec: {index}}` or `{type: keyword, spec: {keyword,
/// startfrom}}`.
fn parse_begin_search(value: &Value) -> Option<BeginSearch> {
    let kind = field(value, b"type")?.as_bytes()?;
    let spec = field(value, b"spec")?;
    if kind == b"index" {
        Some(BeginSearch::Index(int_field(spec, b"index")?))
    } else if kind == b"keyword" {
        Some(BeginSearch::Keyword {
            keyword: field(spec, b"keyword")?.as_bytes()?.to_vec(),
            start_from: int_field(spec, b"startfrom")?,
        })
    } else {
        None
    }
}

/// `{type: range, spec: {lastkey, keystep, limit}}` or `{type: keynum,
/// spec: {keynumidx, firstkey, keystep}}`.
fn parse_find_keys(value: &Value) -> Option<FindKeys> {
    let kind = field(value, b"type")?.as_bytes()?;
    let spec = field(value, b"spec")?;
    if kind == b"range" {
        Some(FindKeys::Range {
            last_key: int_field(spec, b"lastkey")?,
            key_step: int_field(spec, b"keystep")?,
            limit: int_field(spec, b"limit")?,
        })
    } else if kind == b"keynum" {
        Some(FindKeys::KeyNum {
            key_num_idx: int_field(spec, b"keynumidx")?,
            first_key: int_field(spec, b"firstkey")?,
            key_step: int_field(spec, b"keystep")?,
        })
    } else {
        None
    }
}

/// The value under `name` in a RESP3 map or a RESP2 array of key/value
/// pairs.
fn field<'a>(value: &'a Value, name: &[u8]) -> Option<&'a Value> {
    match value.without_attributes() {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(name))
            .map(|(_, v)| v),
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|pair| pair[0].as_bytes() == Some(name))
            .map(|pair| &pair[1]),
        _ => None,
    }
}

/// The integer under `name`.
fn int_field(value: &Value, name: &[u8]) -> Option<i64> {
    field(value, name)?.as_i64()
}

impl KeyRule {
    /// The rule gives one key, at argument 1, for any arguments.
    fn is_first_argument_only(&self) -> bool {
        match self {
            KeyRule::Range { first, last, step } => *first == 1 && *last == 1 && *step >= 1,
            KeyRule::Specs(specs) => match specs.as_slice() {
                [KeySpec {
                    begin: BeginSearch::Index(1),
                    find:
                        FindKeys::Range {
                            last_key: 0,
                            key_step,
                            ..
                        },
                }] => *key_step >= 1,
                _ => false,
            },
            KeyRule::Builtin(_) => false,
        }
    }

    /// Appends the positions of the keys in `args` (in any order; the caller
    /// sorts).
    fn find(&self, args: &[&[u8]], out: &mut Vec<usize>) {
        match self {
            KeyRule::Range { first, last, step } => legacy_keys(*first, *last, *step, args, out),
            KeyRule::Specs(specs) => {
                for spec in specs {
                    spec.find(args, out);
                }
            }
            KeyRule::Builtin(rule) => rule.find(args, out),
        }
    }
}

/// The legacy rule: `first`..=`last` every `step`, `last` negative counting
/// from the end. A position past the end gives no keys, as the server does.
fn legacy_keys(first: i64, last: i64, step: i64, args: &[&[u8]], out: &mut Vec<usize>) {
    let argc = args.len() as i128;
    let last = if last < 0 {
        argc + i128::from(last)
    } else {
        i128::from(last)
    };
    push_every(i128::from(first), last, i128::from(step), argc, out);
}

/// Pushes `first, first + step, ...` up to `last`, if all of that lies
/// within the arguments after the name (`1..argc`) and `step` is positive;
/// otherwise nothing. (128 bits: no sum of 64-bit numbers overflows.)
fn push_every(first: i128, last: i128, step: i128, argc: i128, out: &mut Vec<usize>) {
    if first < 1 || last < first || last >= argc || step < 1 {
        return;
    }
    // Within 1..argc, so each fits a usize; a step past the end is one key.
    let step = usize::try_from(step).unwrap_or(usize::MAX);
    out.extend((first as usize..=last as usize).step_by(step));
}

impl KeySpec {
    /// Appends the positions this specification finds; none when the
    /// search fails or points outside the arguments.
    fn find(&self, args: &[&[u8]], out: &mut Vec<usize>) {
        let argc = args.len() as i128;
        let begin = match self.begin.start(args) {
            Some(begin) => begin,
            None => return,
        };
        match self.find {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let last_key = i128::from(last_key);
                let last = if last_key >= 0 {
                    begin + last_key
                } else if limit <= 1 {
                    argc + last_key
                } else {
                    begin + (argc - begin) / i128::from(limit) + last_key
                };
                push_every(begin, last, i128::from(key_step), argc, out);
            }
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                key_step,
            } => {
                let count = match arg_at(args, begin + i128::from(key_num_idx)) {
                    Some(arg) => match parse_i64(arg, Form::Canonical) {
                        Some(n) if n > 0 => i128::from(n),
                        _ => return,
                    },
                    None => return,
                };
                let first = begin + i128::from(first_key);
                let step = i128::from(key_step);
                push_every(first, first + (count - 1) * step, step, argc, out);
            }
            FindKeys::Unknown => {}
        }
    }
}

impl BeginSearch {
    /// The index where the keys start, if the search finds one.
    fn start(&self, args: &[&[u8]]) -> Option<i128> {
        match self {
            BeginSearch::Index(i) => Some(i128::from(*i)),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => find_keyword(args, keyword, *start_from).map(|at| at as i128 + 1),
            BeginSearch::Unknown => None,
        }
    }
}

/// The index of `keyword` (any case) among the arguments after the name:
/// searched forwards from `start_from`, or, when it is negative, backwards
/// from `args.len() + start_from`.
fn find_keyword(args: &[&[u8]], keyword: &[u8], start_from: i64) -> Option<usize> {
    let is_keyword = |i: &usize| args[*i].eq_ignore_ascii_case(keyword);
    let argc = args.len() as i128;
    let from = i128::from(start_from);
    if from > 0 {
        let from = usize::try_from(from).ok()?;
        (from..args.len()).find(is_keyword)
    } else if from < 0 {
        let from = usize::try_from(argc + from).ok()?;
        (1..=from).rev().find(is_keyword)
    } else {
        None
    }
}

/// The argument at `index`, if there is one after the name.
fn arg_at<'a>(args: &[&'a [u8]], index: i128) -> Option<&'a [u8]> {
    if index < 1 {
        return None;
    }
    args.get(usize::try_from(index).ok()?).copied()
}

impl Builtin {
    /// Appends the positions of the keys in `args`.
    fn find(self, args: &[&[u8]], out: &mut Vec<usize>) {
        match self {
            Builtin::NumKeys { dest, count_at } => numkeys_keys(dest, count_at, args, out),
            Builtin::Streams => stream_keys(args, out),
            Builtin::Sort => sort_keys(args, out),
            Builtin::Migrate => migrate_keys(args, out),
        }
    }
}

/// `[dest] numkeys key...`: nothing unless `numkeys` is a positive integer
/// no larger than the arguments after it.
fn numkeys_keys(dest: Option<usize>, count_at: usize, args: &[&[u8]], out: &mut Vec<usize>) {
    let count = match args
        .get(count_at)
        .and_then(|a| parse_i64(a, Form::Canonical))
    {
        Some(n) if n > 0 => n as u64,
        _ => return,
    };
    let first = count_at + 1;
    let available = args.len().saturating_sub(first);
    if count > available as u64 {
        return;
    }
    out.extend(dest);
    out.extend(first..first + count as usize);
}

/// `XREAD` / `XREADGROUP`: skips the options (`BLOCK ms`, `COUNT n`,
/// `GROUP g c`, `NOACK`) up to `STREAMS`; the keys are the first half of
/// what follows it. An unknown option, no `STREAMS`, or an odd number of
/// arguments after it: no keys.
fn stream_keys(args: &[&[u8]], out: &mut Vec<usize>) {
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        if arg.eq_ignore_ascii_case(b"streams") {
            let rest = args.len() - i - 1;
            if rest > 0 && rest % 2 == 0 {
                out.extend(i + 1..=i + rest / 2);
            }
            return;
        }
        i += match option_width(
            arg,
            &[(b"block", 2), (b"count", 2), (b"group", 3), (b"noack", 1)],
        ) {
            Some(width) => width,
            None => return,
        };
    }
}

/// How many arguments `arg` takes up with its parameters, if it is one of
/// `options` (name, width; any case).
fn option_width(arg: &[u8], options: &[(&[u8], usize)]) -> Option<usize> {
    options
        .iter()
        .find(|(name, _)| arg.eq_ignore_ascii_case(name))
        .map(|&(_, width)| width)
}

/// `SORT key [BY p] [LIMIT o c] [GET p]... [ASC|DESC] [ALPHA] [STORE dst]`:
/// the key, and the destination of the last `STORE`.
fn sort_keys(args: &[&[u8]], out: &mut Vec<usize>) {
    if args.len() < 2 {
        return;
    }
    out.push(1);
    let mut store = None;
    let mut i = 2;
    while let Some(arg) = args.get(i) {
        if arg.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
            store = Some(i + 1);
        }
        i += option_width(
            arg,
            &[(b"limit", 3), (b"by", 2), (b"get", 2), (b"store", 2)],
        )
        .unwrap_or(1);
    }
    out.extend(store);
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2
/// user pw] [KEYS key...]`: the keys after `KEYS` when the key at 3 is
/// empty (none when it is not: the server refuses that), else the key at 3.
fn migrate_keys(args: &[&[u8]], out: &mut Vec<usize>) {
    let mut i = 6;
    while let Some(arg) = args.get(i) {
        if arg.eq_ignore_ascii_case(b"keys") {
            if args[3].is_empty() {
                out.extend(i + 1..args.len());
            }
            return;
        }
        i += option_width(arg, &[(b"auth", 2), (b"auth2", 3)]).unwrap_or(1);
    }
    if args.len() > 3 {
        out.push(3);
    }
}

/// The error for a reply that is not a list of commands: the server's own
/// error when it refused `COMMAND`, else a protocol error.
fn refusal_or_unexpected(reply: &Value) -> Error {
    match reply {
        Value::Error(line) => Error::from(ServerError::new(line)),
        Value::BlobError(bytes) => Error::from(ServerError::new(&String::from_utf8_lossy(bytes))),
        other => unexpected(
            "COMMAND to answer with an array of commands",
            describe(other),
        ),
    }
}

/// FNV-1a, for the command-name table: names are a few bytes, looked up
/// once per command on the hot path, and come from the server's own
/// `COMMAND` reply, so SipHash's defence against chosen keys buys nothing
/// here and costs more than the rest of the lookup.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Decoder, Limits};
    use proptest::prelude::*;

    /// `COMMAND` as redis-server 7.0.15 answered it, on RESP2 and on RESP3.
    static COMMAND_RESP2: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/command-7.0.15.resp2"
    ));
    static COMMAND_RESP3: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/command-7.0.15.resp3"
    ));
    /// Commands and their keys, checked against a live server by
    /// tests/cluster_keys.rs.
    static KEY_CASES: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/key-cases.txt"
    ));

    /// Decodes a whole captured reply.
    fn decode_all(bytes: &[u8]) -> Value {
        let mut decoder = Decoder::new(Limits::default());
        let (used, value) = decoder.feed(bytes).expect("a valid capture");
        assert_eq!(used, bytes.len(), "one reply, nothing after it");
        value.expect("a whole reply")
    }

    /// The table of a captured COMMAND reply.
    fn real_table(bytes: &[u8]) -> CommandTable {
        CommandTable::from_reply(&decode_all(bytes)).expect("the real COMMAND reply")
    }

    /// A bulk string.
    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A simple string.
    fn status(s: &str) -> Value {
        Value::SimpleString(s.to_string().into())
    }

    /// Runs `key_positions` on space-separated words (`""`: an empty one).
    fn keys_of(table: &CommandTable, line: &str) -> (CommandKind, Vec<usize>) {
        let words: Vec<&[u8]> = line
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| if w == "\"\"" { &b""[..] } else { w.as_bytes() })
            .collect();
        let mut out = vec![99, 98];
        let kind = table.key_positions(&words, &mut out);
        (kind, out)
    }

    /// The key positions of `line`.
    fn positions(table: &CommandTable, line: &str) -> Vec<usize> {
        keys_of(table, line).1
    }

    /// A known readonly command.
    const RO: CommandKind = CommandKind::Known { readonly: true };
    /// A known command that is not readonly.
    const RW: CommandKind = CommandKind::Known { readonly: false };

    /// The shape of a reply: RESP2 (flat arrays) or RESP3 (maps and sets).
    #[derive(Clone, Copy, PartialEq)]
    enum Shape {
        Resp2,
        Resp3,
    }

    /// A map, flat for RESP2.
    fn map(shape: Shape, pairs: Vec<(&str, Value)>) -> Value {
        match shape {
            Shape::Resp3 => Value::Map(pairs.into_iter().map(|(k, v)| (bulk(k), v)).collect()),
            Shape::Resp2 => Value::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| vec![bulk(k), v])
                    .collect(),
            ),
        }
    }

    /// A set of status strings, an array for RESP2.
    fn flags(shape: Shape, names: &[&str]) -> Value {
        let items = names.iter().map(|n| status(n)).collect();
        match shape {
            Shape::Resp3 => Value::Set(items),
            Shape::Resp2 => Value::Array(items),
        }
    }

    /// `begin_search` of type index.
    fn index(shape: Shape, i: i64) -> Value {
        map(
            shape,
            vec![
                ("type", bulk("index")),
                ("spec", map(shape, vec![("index", Value::Integer(i))])),
            ],
        )
    }

    /// `begin_search` of type keyword.
    fn keyword(shape: Shape, word: &str, start_from: i64) -> Value {
        map(
            shape,
            vec![
                ("type", bulk("keyword")),
                (
                    "spec",
                    map(
                        shape,
                        vec![
                            ("keyword", bulk(word)),
                            ("startfrom", Value::Integer(start_from)),
                        ],
                    ),
                ),
            ],
        )
    }

    /// `find_keys` of type range.
    fn range(shape: Shape, last_key: i64, key_step: i64, limit: i64) -> Value {
        map(
            shape,
            vec![
                ("type", bulk("range")),
                (
                    "spec",
                    map(
                        shape,
                        vec![
                            ("lastkey", Value::Integer(last_key)),
                            ("keystep", Value::Integer(key_step)),
                            ("limit", Value::Integer(limit)),
                        ],
                    ),
                ),
            ],
        )
    }

    /// `find_keys` of type keynum.
    fn keynum(shape: Shape, key_num_idx: i64, first_key: i64, key_step: i64) -> Value {
        map(
            shape,
            vec![
                ("type", bulk("keynum")),
                (
                    "spec",
                    map(
                        shape,
                        vec![
                            ("keynumidx", Value::Integer(key_num_idx)),
                            ("firstkey", Value::Integer(first_key)),
                            ("keystep", Value::Integer(key_step)),
                        ],
                    ),
                ),
            ],
        )
    }

    /// `begin_search` or `find_keys` of type unknown.
    fn unknown(shape: Shape) -> Value {
        map(
            shape,
            vec![("type", bulk("unknown")), ("spec", map(shape, vec![]))],
        )
    }

    /// A key specification.
    fn spec(shape: Shape, begin: Value, find: Value) -> Value {
        map(
            shape,
            vec![
                ("flags", flags(shape, &["RW", "access"])),
                ("begin_search", begin),
                ("find_keys", find),
            ],
        )
    }

    /// A Redis 7 entry: name, arity, flags, first, last, step, ACL
    /// categories, tips, key specs, subcommands.
    fn entry7(
        shape: Shape,
        name: &str,
        flag_names: &[&str],
        specs: Vec<Value>,
        subs: Vec<Value>,
    ) -> Value {
        Value::Array(vec![
            bulk(name),
            Value::Integer(-2),
            flags(shape, flag_names),
            Value::Integer(0),
            Value::Integer(0),
            Value::Integer(0),
            flags(shape, &["@slow"]),
            flags(shape, &[]),
            Value::Array(specs),
            Value::Array(subs),
        ])
    }

    /// A Redis 6 entry: name, arity, flags, first, last, step, ACL
    /// categories.
    fn entry6(name: &str, flag_names: &[&str], first: i64, last: i64, step: i64) -> Value {
        Value::Array(vec![
            bulk(name),
            Value::Integer(-2),
            flags(Shape::Resp2, flag_names),
            Value::Integer(first),
            Value::Integer(last),
            Value::Integer(step),
            flags(Shape::Resp2, &["@read"]),
        ])
    }

    /// The table of a reply made of `entries`.
    fn table_of(entries: Vec<Value>) -> CommandTable {
        CommandTable::from_reply(&Value::Array(entries)).unwrap()
    }

    #[test]
    fn the_fixtures_are_small_and_whole() {
        assert!(COMMAND_RESP2.len() < 300_000 && COMMAND_RESP3.len() < 300_000);
        for bytes in [COMMAND_RESP2, COMMAND_RESP3] {
            assert_eq!(decode_all(bytes).as_slice().map(<[Value]>::len), Some(240));
        }
    }

    #[test]
    fn resp2_and_resp3_give_the_same_table() {
        let (two, three) = (real_table(COMMAND_RESP2), real_table(COMMAND_RESP3));
        assert_eq!(two, three);
        // 240 commands, their subcommands, no built-in added as new.
        assert_eq!(two.commands.len(), 366);
    }

    /// Every case of tests/data/key-cases.txt (what the live server says),
    /// with both real tables.
    #[test]
    fn the_real_tables_agree_with_the_server() {
        for table in [real_table(COMMAND_RESP2), real_table(COMMAND_RESP3)] {
            let mut checked = 0;
            for line in KEY_CASES.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (args, keys) = line.split_once("=>").unwrap();
                let args: Vec<&str> = args.split_whitespace().collect();
                let expected: Vec<&str> = keys.split_whitespace().collect();
                let (kind, found) = keys_of(&table, &args.join(" "));
                assert_ne!(kind, CommandKind::Unknown, "{}", line);
                let named: Vec<&str> = found.iter().map(|&i| args[i]).collect();
                assert_eq!(named, expected, "{}: positions {:?}", line, found);
                checked += 1;
            }
            assert!(checked > 80);
        }
    }

    #[test]
    fn the_commands_of_the_brief() {
        for table in [real_table(COMMAND_RESP2), real_table(COMMAND_RESP3)] {
            let t = &table;
            assert_eq!(keys_of(t, "GET k"), (RO, vec![1]));
            assert_eq!(keys_of(t, "SET k v"), (RW, vec![1]));
            assert_eq!(keys_of(t, "MGET a b c"), (RO, vec![1, 2, 3]));
            assert_eq!(keys_of(t, "MSET a 1 b 2"), (RW, vec![1, 3]));
            assert_eq!(keys_of(t, "DEL a b"), (RW, vec![1, 2]));
            assert_eq!(keys_of(t, "EXISTS a b"), (RO, vec![1, 2]));
            assert_eq!(keys_of(t, "TOUCH a b"), (RO, vec![1, 2]));
            assert_eq!(keys_of(t, "UNLINK a b"), (RW, vec![1, 2]));
            assert_eq!(keys_of(t, "EVAL s 2 a b x"), (RW, vec![3, 4]));
            assert_eq!(keys_of(t, "EVAL_RO s 1 a x"), (RO, vec![3]));
            assert_eq!(keys_of(t, "EVALSHA sha 0 x"), (RW, vec![]));
            assert_eq!(keys_of(t, "FCALL f 1 a"), (RW, vec![3]));
            assert_eq!(keys_of(t, "FCALL_RO f 1 a"), (RO, vec![3]));
            assert_eq!(
                keys_of(t, "XREAD COUNT 2 STREAMS s1 s2 0 0"),
                (RO, vec![4, 5])
            );
            assert_eq!(
                keys_of(t, "XREADGROUP GROUP g c STREAMS s1 >"),
                (RW, vec![5])
            );
            assert_eq!(keys_of(t, "ZUNIONSTORE dst 2 a b"), (RW, vec![1, 3, 4]));
            assert_eq!(keys_of(t, "BITOP AND dst a b"), (RW, vec![2, 3, 4]));
            assert_eq!(keys_of(t, "MEMORY USAGE k"), (RO, vec![2]));
            assert_eq!(keys_of(t, "OBJECT ENCODING k"), (RO, vec![2]));
            assert_eq!(keys_of(t, "LMOVE a b LEFT RIGHT"), (RW, vec![1, 2]));
            assert_eq!(keys_of(t, "BLMPOP 0 2 a b LEFT"), (RW, vec![3, 4]));
            assert_eq!(keys_of(t, "SORT k STORE d"), (RW, vec![1, 3]));
            assert_eq!(keys_of(t, "SORT_RO k"), (RO, vec![1]));
            assert_eq!(keys_of(t, "MIGRATE h 1 k 0 5"), (RW, vec![3]));
            assert_eq!(
                keys_of(t, "MIGRATE h 1 \"\" 0 5 KEYS a b"),
                (RW, vec![7, 8])
            );
            assert_eq!(keys_of(t, "PING"), (RW, vec![]));
            assert_eq!(keys_of(t, "DBSIZE"), (RO, vec![]));
            assert_eq!(keys_of(t, "TIME"), (RW, vec![]));
            assert_eq!(keys_of(t, "WAIT 1 0"), (RW, vec![]));
            assert_eq!(keys_of(t, "XINFO STREAM k"), (RO, vec![2]));
            assert_eq!(keys_of(t, "CLIENT KILL x"), (RW, vec![]));
            // Sharded pub/sub: the channel, although its spec says not_key.
            assert_eq!(keys_of(t, "SPUBLISH ch m"), (RW, vec![1]));
            assert_eq!(keys_of(t, "SSUBSCRIBE a b"), (RW, vec![1, 2]));
            assert_eq!(keys_of(t, "SUNSUBSCRIBE"), (RW, vec![]));
            // Unbalanced STREAMS: the server routes it nowhere in particular.
            assert_eq!(keys_of(t, "XREAD STREAMS s1 s2 0"), (RO, vec![]));
            // Names in any case, subcommands too; unknown ones.
            assert_eq!(keys_of(t, "gEt k"), (RO, vec![1]));
            assert_eq!(keys_of(t, "object encoding k"), (RO, vec![2]));
            assert_eq!(keys_of(t, "OBJECT"), (RW, vec![]));
            assert_eq!(keys_of(t, "OBJECT NOSUCH k"), (RW, vec![]));
            assert_eq!(
                keys_of(t, "NOSUCHCOMMAND k"),
                (CommandKind::Unknown, vec![])
            );
            assert_eq!(keys_of(t, "GET\u{e9} k"), (CommandKind::Unknown, vec![]));
            // Arguments missing: no key past the end; each spec on its own.
            assert_eq!(keys_of(t, "GET"), (RO, vec![]));
            assert_eq!(keys_of(t, "LMOVE a"), (RW, vec![1]));
        }
    }

    #[test]
    fn non_utf8_and_overlong_names() {
        let table = real_table(COMMAND_RESP2);
        let mut out = Vec::new();
        let long = vec![b'g'; MAX_NAME + 1];
        assert_eq!(
            table.key_positions(&[&long, b"k"], &mut out),
            CommandKind::Unknown
        );
        assert_eq!(
            table.key_positions(&[b"\xff\xfe", b"k"], &mut out),
            CommandKind::Unknown
        );
        assert_eq!(table.key_positions(&[], &mut out), CommandKind::Unknown);
        // Binary keys are just arguments.
        assert_eq!(table.key_positions(&[b"GET", b"\xff\x00"], &mut out), RO);
        assert_eq!(out, vec![1]);
        // A subcommand too long to look up: the parent's entry.
        let sub = vec![b'e'; MAX_NAME];
        assert_eq!(table.key_positions(&[b"OBJECT", &sub, b"k"], &mut out), RW);
        assert!(out.is_empty());
    }

    #[test]
    fn fallback_knows_only_the_builtins() {
        let t = CommandTable::fallback();
        assert_eq!(keys_of(&t, "GET k"), (CommandKind::Unknown, vec![]));
        assert_eq!(keys_of(&t, "PING"), (CommandKind::Unknown, vec![]));
        assert_eq!(keys_of(&t, "eval s 2 a b x"), (RW, vec![3, 4]));
        assert_eq!(keys_of(&t, "EVALSHA s 1 a"), (RW, vec![3]));
        assert_eq!(keys_of(&t, "EVAL_RO s 1 a"), (RO, vec![3]));
        assert_eq!(keys_of(&t, "EVALSHA_RO s 1 a"), (RO, vec![3]));
        assert_eq!(keys_of(&t, "FCALL f 0"), (RW, vec![]));
        assert_eq!(keys_of(&t, "FCALL_RO f 2 a b c"), (RO, vec![3, 4]));
        assert_eq!(
            keys_of(&t, "XREAD COUNT 2 STREAMS s1 s2 0 0"),
            (RO, vec![4, 5])
        );
        assert_eq!(
            keys_of(&t, "XREADGROUP GROUP g c STREAMS s1 >"),
            (RW, vec![5])
        );
        assert_eq!(keys_of(&t, "ZINTERSTORE d 2 a b"), (RW, vec![1, 3, 4]));
        assert_eq!(keys_of(&t, "ZDIFF 2 a b"), (RO, vec![2, 3]));
        assert_eq!(keys_of(&t, "SORT k LIMIT 0 1 STORE d"), (RW, vec![1, 6]));
        assert_eq!(keys_of(&t, "MIGRATE h 1 k 0 5"), (RW, vec![3]));
        assert_eq!(t.commands.len(), BUILTINS.len());
    }

    #[test]
    fn numkeys_garbage() {
        let t = CommandTable::fallback();
        for line in [
            "EVAL",
            "EVAL s",
            "EVAL s x a",
            "EVAL s -1 a",
            "EVAL s 01 a",
            "EVAL s +1 a",
            "EVAL s 1",
            "EVAL s 3 a b",
            "EVAL s 99999999999999999999 a",
            "EVAL s 9223372036854775807 a",
            "EVAL s -9223372036854775808 a",
            "ZUNIONSTORE d 0 a",
            "ZUNIONSTORE d",
            "ZUNIONSTORE",
        ] {
            assert_eq!(positions(&t, line), Vec::<usize>::new(), "{}", line);
        }
        assert_eq!(positions(&t, "EVAL s 2 a b"), vec![3, 4]);
    }

    #[test]
    fn streams_garbage() {
        let t = CommandTable::fallback();
        for line in [
            "XREAD",
            "XREAD COUNT",
            "XREAD COUNT 2",
            "XREAD STREAMS",
            "XREAD STREAMS s",
            "XREAD STREAMS a b c",
            "XREAD BOGUS STREAMS s 0",
            "XREADGROUP GROUP g",
            "XREADGROUP GROUP g c",
            "XREADGROUP GROUP g c NOACK",
        ] {
            assert_eq!(positions(&t, line), Vec::<usize>::new(), "{}", line);
        }
        assert_eq!(
            positions(&t, "xread block 5 count 1 streams a b c 1 2 3"),
            vec![6, 7, 8]
        );
        // The keyword is found as an option, not as a group or a key.
        assert_eq!(
            positions(&t, "XREADGROUP GROUP streams STREAMS STREAMS STREAMS 0"),
            vec![5]
        );
        assert_eq!(positions(&t, "XREAD COUNT STREAMS STREAMS s 0"), vec![4]);
    }

    #[test]
    fn sort_and_migrate_garbage() {
        let t = CommandTable::fallback();
        assert_eq!(positions(&t, "SORT"), Vec::<usize>::new());
        assert_eq!(positions(&t, "SORT k STORE"), vec![1]);
        assert_eq!(positions(&t, "SORT k LIMIT"), vec![1]);
        assert_eq!(positions(&t, "SORT k STORE a STORE b"), vec![1, 5]);
        assert_eq!(positions(&t, "SORT k BY store GET store"), vec![1]);
        assert_eq!(
            positions(&t, "SORT k LIMIT store store STORE d"),
            vec![1, 6]
        );
        assert_eq!(positions(&t, "MIGRATE"), Vec::<usize>::new());
        assert_eq!(positions(&t, "MIGRATE h 1"), Vec::<usize>::new());
        assert_eq!(positions(&t, "MIGRATE h 1 k"), vec![3]);
        assert_eq!(
            positions(&t, "MIGRATE h 1 k 0 5 KEYS a"),
            Vec::<usize>::new()
        );
        assert_eq!(
            positions(&t, "MIGRATE h 1 \"\" 0 5 KEYS"),
            Vec::<usize>::new()
        );
        assert_eq!(positions(&t, "MIGRATE h 1 \"\" 0 5 AUTH"), vec![3]);
        assert_eq!(
            positions(&t, "MIGRATE h 1 \"\" 0 5 AUTH2 u keys KEYS a"),
            vec![10]
        );
    }

    #[test]
    fn each_key_spec_type_in_both_shapes() {
        for shape in [Shape::Resp2, Shape::Resp3] {
            let s = shape;
            let t = table_of(vec![
                // index + range: one key.
                entry7(
                    s,
                    "one",
                    &["readonly"],
                    vec![spec(s, index(s, 1), range(s, 0, 1, 0))],
                    vec![],
                ),
                // index + range to the end, every other argument.
                entry7(
                    s,
                    "pairs",
                    &["write"],
                    vec![spec(s, index(s, 1), range(s, -1, 2, 0))],
                    vec![],
                ),
                // index + range that stops two before the end.
                entry7(
                    s,
                    "most",
                    &[],
                    vec![spec(s, index(s, 2), range(s, -3, 1, 0))],
                    vec![],
                ),
                // keyword forwards + range limited to the first half.
                entry7(
                    s,
                    "half",
                    &[],
                    vec![spec(s, keyword(s, "STREAMS", 1), range(s, -1, 1, 2))],
                    vec![],
                ),
                // keyword searched backwards from the one before the last.
                entry7(
                    s,
                    "back",
                    &[],
                    vec![spec(s, keyword(s, "KEYS", -2), range(s, -1, 1, 0))],
                    vec![],
                ),
                // index + keynum.
                entry7(
                    s,
                    "num",
                    &[],
                    vec![spec(s, index(s, 2), keynum(s, 0, 1, 1))],
                    vec![],
                ),
                // keynum with a step of two: numkeys key value key value.
                entry7(
                    s,
                    "numpairs",
                    &[],
                    vec![spec(s, index(s, 1), keynum(s, 0, 1, 2))],
                    vec![],
                ),
                // Two specs in reverse order, overlapping.
                entry7(
                    s,
                    "twice",
                    &[],
                    vec![
                        spec(s, index(s, 2), range(s, 1, 1, 0)),
                        spec(s, index(s, 1), range(s, 1, 1, 0)),
                    ],
                    vec![],
                ),
                // Unknown specs give nothing; the known one still counts.
                entry7(
                    s,
                    "partly",
                    &[],
                    vec![
                        spec(s, unknown(s), unknown(s)),
                        spec(s, index(s, 1), range(s, 0, 1, 0)),
                    ],
                    vec![],
                ),
                // Types from the future.
                entry7(
                    s,
                    "future",
                    &[],
                    vec![spec(
                        s,
                        map(s, vec![("type", bulk("regex")), ("spec", map(s, vec![]))]),
                        range(s, 0, 1, 0),
                    )],
                    vec![],
                ),
            ]);
            assert_eq!(keys_of(&t, "ONE k"), (RO, vec![1]));
            assert_eq!(keys_of(&t, "PAIRS a 1 b 2 c 3"), (RW, vec![1, 3, 5]));
            assert_eq!(positions(&t, "MOST x a b c y z"), vec![2, 3, 4]);
            assert_eq!(positions(&t, "MOST x"), Vec::<usize>::new());
            assert_eq!(positions(&t, "HALF x streams a b 1 2"), vec![3, 4]);
            assert_eq!(positions(&t, "HALF STREAMS STREAMS a b"), vec![2]);
            assert_eq!(positions(&t, "HALF x y"), Vec::<usize>::new());
            assert_eq!(positions(&t, "BACK h p KEYS a b"), vec![4, 5]);
            assert_eq!(positions(&t, "BACK KEYS KEYS a"), vec![3]);
            assert_eq!(
                positions(&t, "BACK KEYS a"),
                vec![2],
                "searched down to index 1"
            );
            assert_eq!(positions(&t, "BACK a b KEYS"), Vec::<usize>::new());
            assert_eq!(positions(&t, "NUM x 2 a b c"), vec![3, 4]);
            assert_eq!(positions(&t, "NUM x 4 a b c"), Vec::<usize>::new());
            assert_eq!(positions(&t, "NUM x 0 a"), Vec::<usize>::new());
            assert_eq!(positions(&t, "NUM x"), Vec::<usize>::new());
            assert_eq!(positions(&t, "NUMPAIRS 2 k1 v1 k2 v2"), vec![2, 4]);
            assert_eq!(positions(&t, "NUMPAIRS 2 k1 v1 k2"), vec![2, 4]);
            assert_eq!(positions(&t, "NUMPAIRS 2 k1 v1"), Vec::<usize>::new());
            assert_eq!(positions(&t, "TWICE a b c"), vec![1, 2, 3]);
            assert_eq!(positions(&t, "PARTLY k"), vec![1]);
            assert_eq!(keys_of(&t, "FUTURE k"), (RW, vec![]));
        }
    }

    #[test]
    fn subcommands_in_both_shapes() {
        for s in [Shape::Resp2, Shape::Resp3] {
            let t = table_of(vec![entry7(
                s,
                "object",
                &[],
                vec![],
                vec![
                    entry7(
                        s,
                        "object|encoding",
                        &["readonly"],
                        vec![spec(s, index(s, 2), range(s, 0, 1, 0))],
                        vec![],
                    ),
                    entry7(s, "object|help", &["loading"], vec![], vec![]),
                ],
            )]);
            assert_eq!(keys_of(&t, "OBJECT ENCODING k"), (RO, vec![2]));
            assert_eq!(keys_of(&t, "Object Help"), (RW, vec![]));
            assert_eq!(keys_of(&t, "OBJECT"), (RW, vec![]));
            assert_eq!(keys_of(&t, "OBJECT nope k"), (RW, vec![]));
            // A subcommand is not a command of its own name.
            assert_eq!(keys_of(&t, "ENCODING k"), (CommandKind::Unknown, vec![]));
            assert_eq!(t.commands.len(), 3 + BUILTINS.len());
        }
    }

    #[test]
    fn redis6_entries_use_first_last_step() {
        let t = table_of(vec![
            entry6("get", &["readonly", "fast"], 1, 1, 1),
            entry6("mset", &["write"], 1, -1, 2),
            entry6("del", &["write"], 1, -1, 1),
            entry6("ping", &["stale"], 0, 0, 0),
            entry6("bitop", &["write"], 2, -1, 1),
            entry6("eval", &["noscript", "movablekeys"], 0, 0, 0),
            entry6("xread", &["readonly", "movablekeys"], 1, 2, 1),
            entry6("zunionstore", &["write", "movablekeys"], 0, 0, 0),
            entry6("weird", &[], 1, 1, 0),
            // Redis 5 and earlier: no ACL categories, six fields.
            Value::Array(vec![
                status("rpoplpush"),
                Value::Integer(3),
                Value::Array(vec![status("write")]),
                Value::Integer(1),
                Value::Integer(2),
                Value::Integer(1),
            ]),
        ]);
        assert_eq!(keys_of(&t, "GET k"), (RO, vec![1]));
        assert_eq!(keys_of(&t, "GET"), (RO, vec![]));
        assert_eq!(keys_of(&t, "MSET a 1 b 2"), (RW, vec![1, 3]));
        assert_eq!(keys_of(&t, "DEL a b c"), (RW, vec![1, 2, 3]));
        assert_eq!(keys_of(&t, "PING x"), (RW, vec![]));
        assert_eq!(keys_of(&t, "BITOP OR d a"), (RW, vec![2, 3]));
        assert_eq!(
            keys_of(&t, "WEIRD k"),
            (RW, vec![]),
            "a step of 0 gives nothing"
        );
        assert_eq!(keys_of(&t, "RPOPLPUSH a b"), (RW, vec![1, 2]));
        assert_eq!(keys_of(&t, "RPOPLPUSH a"), (RW, vec![]));
        // The traps: right although the table says nothing useful.
        assert_eq!(keys_of(&t, "EVAL s 1 k"), (RW, vec![3]));
        assert_eq!(
            keys_of(&t, "XREAD COUNT 1 STREAMS a b 0 0"),
            (RO, vec![4, 5])
        );
        assert_eq!(keys_of(&t, "ZUNIONSTORE d 2 a b"), (RW, vec![1, 3, 4]));
        // Built-ins the reply did not list are there too.
        assert_eq!(keys_of(&t, "FCALL_RO f 1 k"), (RO, vec![3]));
    }

    #[test]
    fn command_info_nil_entries_are_skipped() {
        let t = table_of(vec![Value::Nil, entry6("get", &["readonly"], 1, 1, 1)]);
        assert_eq!(keys_of(&t, "GET k"), (RO, vec![1]));
    }

    #[test]
    fn malformed_replies_are_rejected() {
        let message = |reply: Value| match CommandTable::from_reply(&reply) {
            Err(Error::Protocol(e)) => e.to_string(),
            other => panic!("expected a protocol error, got {:?}", other),
        };
        assert_eq!(
            message(bulk("x")),
            "unexpected reply at byte 0 of the reply: expected COMMAND to answer with an array of \
             commands, found bulk string \"x\""
        );
        assert_eq!(
            message(Value::Array(vec![entry6("get", &[], 1, 1, 1), Value::Integer(7)])),
            "unexpected reply at byte 0 of the reply: expected COMMAND entry #1 to be [name, arity, \
             flags, first key, last key, step, ...], found integer 7"
        );
        let short = Value::Array(vec![bulk("get"), Value::Integer(2)]);
        assert!(message(Value::Array(vec![short])).ends_with("found array [\"get\", 2]"));
        let mut bad_first = entry6("get", &[], 1, 1, 1);
        if let Value::Array(fields) = &mut bad_first {
            fields[3] = bulk("1");
        }
        assert!(message(Value::Array(vec![bad_first])).contains("entry #0"));
        let bad_sub = entry7(Shape::Resp2, "object", &[], vec![], vec![Value::Integer(1)]);
        assert!(message(Value::Array(vec![bad_sub])).contains(
            "expected subcommand #0 of COMMAND entry #0 to be [name, arity, flags, first key, last key, step, ...]"
        ));
        let mut bad_specs = entry7(Shape::Resp3, "x", &[], vec![], vec![]);
        if let Value::Array(fields) = &mut bad_specs {
            fields[8] = Value::Integer(0);
        }
        assert!(message(Value::Array(vec![bad_specs])).contains("entry #0"));
        // The server's refusal is its error.
        let err = CommandTable::from_reply(&Value::Error("NOPERM no".into())).unwrap_err();
        assert_eq!(err.server_error().map(|e| e.code()), Some("NOPERM"));
    }

    #[test]
    fn out_is_cleared_and_reused() {
        let t = real_table(COMMAND_RESP3);
        let mut out = Vec::with_capacity(16);
        let before = out.as_ptr();
        for _ in 0..3 {
            assert_eq!(t.key_positions(&[b"MGET", b"a", b"b"], &mut out), RO);
            assert_eq!(out, vec![1, 2]);
            assert_eq!(
                t.key_positions(&[b"NOPE", b"a"], &mut out),
                CommandKind::Unknown
            );
            assert!(out.is_empty());
        }
        assert_eq!(out.as_ptr(), before, "no reallocation of out");
    }

    /// Arguments: command names (real, built-in, odd case, unknown, binary),
    /// then words that matter to the rules, numbers and bytes.
    fn any_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let name = prop_oneof![
            prop::sample::select(vec![
                "get",
                "SET",
                "mset",
                "eval",
                "EVALSHA_RO",
                "fcall",
                "xread",
                "XREADGROUP",
                "sort",
                "migrate",
                "zunionstore",
                "zdiff",
                "object",
                "memory",
                "xinfo",
                "client",
                "georadius",
                "lmpop",
                "blmpop",
                "bitop",
                "spublish",
                "one",
                "pairs",
                "half",
                "back",
                "num",
                "nope",
                "",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ];
        let word = prop_oneof![
            prop::sample::select(vec![
                "STREAMS",
                "streams",
                "KEYS",
                "STORE",
                "LIMIT",
                "GET",
                "BY",
                "GROUP",
                "COUNT",
                "BLOCK",
                "NOACK",
                "AUTH",
                "AUTH2",
                "ENCODING",
                "USAGE",
                "STREAM",
                "KILL",
                "",
                "0",
                "1",
                "2",
                "3",
                "-1",
                "01",
                "9223372036854775807",
                "99999999999999999999",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            (0i64..12).prop_map(|n| n.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..5),
        ];
        (name, prop::collection::vec(word, 0..14)).prop_map(|(name, rest)| {
            let mut args = vec![name];
            args.extend(rest);
            args
        })
    }

    /// A key spec with any numbers, in either shape.
    fn any_spec(shape: Shape) -> impl Strategy<Value = Value> {
        let int = prop_oneof![-4i64..8, any::<i64>(), Just(i64::MIN), Just(i64::MAX)];
        let word = prop::sample::select(vec!["STREAMS", "KEYS", "STORE", ""]);
        let begin = prop_oneof![
            int.clone().prop_map(move |i| index(shape, i)),
            (word, int.clone()).prop_map(move |(w, i)| keyword(shape, w, i)),
            Just(unknown(shape)),
            Just(Value::Integer(1)),
        ];
        let find = prop_oneof![
            (int.clone(), int.clone(), int.clone())
                .prop_map(move |(a, b, c)| range(shape, a, b, c)),
            (int.clone(), int.clone(), int).prop_map(move |(a, b, c)| keynum(shape, a, b, c)),
            Just(unknown(shape)),
            Just(Value::Nil),
        ];
        (begin, find).prop_map(move |(b, f)| spec(shape, b, f))
    }

    /// A table of a few commands with random specs, or random Redis 6
    /// ranges.
    fn any_table() -> impl Strategy<Value = CommandTable> {
        let names = prop::sample::select(vec![
            "get", "one", "pairs", "half", "back", "num", "eval", "object",
        ]);
        let seven = (
            names.clone(),
            any::<bool>(),
            prop::collection::vec(any_spec(Shape::Resp3), 0..4),
        )
            .prop_map(|(name, resp3, specs)| {
                let shape = if resp3 { Shape::Resp3 } else { Shape::Resp2 };
                entry7(shape, name, &["readonly"], specs, vec![])
            });
        let six = (names, -4i64..6, -6i64..6, -2i64..4)
            .prop_map(|(name, first, last, step)| entry6(name, &[], first, last, step));
        prop::collection::vec(prop_oneof![seven, six], 0..6).prop_map(table_of)
    }

    /// The invariants of every answer: positions after the name, inside the
    /// arguments, strictly ascending; none for an unknown command.
    fn check(table: &CommandTable, args: &[Vec<u8>]) -> std::result::Result<(), TestCaseError> {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut out = vec![7, 7, 7];
        let kind = table.key_positions(&args, &mut out);
        prop_assert!(out.iter().all(|&i| i >= 1 && i < args.len()), "{:?}", out);
        prop_assert!(out.windows(2).all(|w| w[0] < w[1]), "{:?}", out);
        if kind == CommandKind::Unknown {
            prop_assert!(out.is_empty());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn real_tables_never_panic(args in any_args()) {
            check(&real_table(COMMAND_RESP2), &args)?;
            check(&CommandTable::fallback(), &args)?;
        }

        #[test]
        fn random_tables_never_panic(table in any_table(), args in any_args()) {
            check(&table, &args)?;
        }

        #[test]
        fn any_value_builds_a_table_or_fails_cleanly(value in any_value(), args in any_args()) {
            if let Ok(table) = CommandTable::from_reply(&value) {
                check(&table, &args)?;
            }
        }
    }

    /// Any value, nested a few levels, with the strings COMMAND replies use.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            (-3i64..5).prop_map(Value::Integer),
            any::<i64>().prop_map(Value::Integer),
            prop::sample::select(vec![
                "get",
                "readonly",
                "type",
                "spec",
                "index",
                "keyword",
                "range",
                "keynum",
                "lastkey",
                "keystep",
                "limit",
                "keynumidx",
                "firstkey",
                "startfrom",
                "begin_search",
                "find_keys",
                "STREAMS",
            ])
            .prop_map(bulk),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::BulkString),
        ];
        leaf.prop_recursive(5, 96, 10, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..11).prop_map(Value::Array),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
                prop::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }
}
