//! `#[ipc(...)]` attributes, and the serde attributes the derive must know
//! of.

use syn::{Attribute, Error};

/// How the user asked a field to be carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAttr {
    /// No `#[ipc]`: decided by the field's type.
    Auto,
    /// `#[ipc(fd)]`: the field's type owns one descriptor.
    Fd,
    /// `#[ipc(serde)]`: plain serde, whatever the type's name.
    Serde,
    /// `#[ipc(pod)]`: a container of `Pod` values, as their bytes.
    Pod,
}

impl FieldAttr {
    fn name(self) -> &'static str {
        match self {
            FieldAttr::Auto => "",
            FieldAttr::Fd => "fd",
            FieldAttr::Serde => "serde",
            FieldAttr::Pod => "pod",
        }
    }
}

/// serde attributes under which serde, not this derive, writes and reads
/// a field (or every field of a variant).
const SERDE_TAKES_OVER: &[&str] = &[
    "with",
    "serialize_with",
    "deserialize_with",
    "skip",
    "skip_serializing",
    "skip_deserializing",
    "flatten",
    "getter",
];

/// Whether `attrs` have a serde attribute under which serde alone writes
/// and reads the field: `#[serde(with = ...)]`, `#[serde(skip)]`,
/// `#[serde(flatten)]`, ...
pub fn serde_takes_over(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .any(|a| {
            let mut found = false;
            // A serde attribute that does not parse as nested metas is
            // serde's to report; it counts as none here.
            let _ = a.parse_nested_meta(|meta| {
                found |= SERDE_TAKES_OVER.iter().any(|name| meta.path.is_ident(name));
                // Skip the value, if any: `= "path"`, or a list: `(...)`.
                if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<syn::Expr>()?;
                } else if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|_| Ok(()))?;
                }
                Ok(())
            });
            found
        })
}

/// Reads the `#[ipc(...)]` attributes of a field, pushing any error.
pub fn field(attrs: &[Attribute], errors: &mut Vec<Error>) -> FieldAttr {
    let mut found: Option<FieldAttr> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("ipc")) {
        let result = attr.parse_nested_meta(|meta| {
            let kind = if meta.path.is_ident("fd") {
                FieldAttr::Fd
            } else if meta.path.is_ident("serde") {
                FieldAttr::Serde
            } else if meta.path.is_ident("pod") {
                FieldAttr::Pod
            } else {
                return Err(meta.error(format!(
                    "unknown ipc attribute `{}`; expected `#[ipc(fd)]`, `#[ipc(serde)]` or `#[ipc(pod)]`",
                    path_text(&meta.path)
                )));
            };
            match found {
                Some(previous) if previous != kind => Err(meta.error(format!(
                    "`#[ipc({})]` and `#[ipc({})]` contradict each other; keep one",
                    previous.name(),
                    kind.name()
                ))),
                _ => {
                    found = Some(kind);
                    Ok(())
                }
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    found.unwrap_or(FieldAttr::Auto)
}

/// Pushes an error for every `#[ipc]` where none belongs (the type itself, a
/// variant).
pub fn none_allowed(attrs: &[Attribute], place: &str, errors: &mut Vec<Error>) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("ipc")) {
        errors.push(Error::new_spanned(
            attr,
            format!("`#[ipc(...)]` does not apply to {place}; put `#[ipc(fd)]`, `#[ipc(serde)]` or `#[ipc(pod)]` on a field"),
        ));
    }
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}
