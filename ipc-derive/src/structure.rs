//! The type's structure, for the connection handshake: its name, generics,
//! fields, variants, and serde and ipc attributes (they change the wire
//! format too). Module paths are left out, so a type reached through two
//! crates matches itself.
//!
//! Field types are left as holes: the text comes in pieces around them,
//! and at run time the probe fills each hole with the description of the
//! field's type as instantiated (see `ipc_core`'s `fingerprint.rs`).

use quote::ToTokens;
use syn::{Attribute, Data, Fields};

use crate::ast::Input;

/// The text around the field types, in the order of `Input::fields`: one
/// piece more than there are fields.
pub fn pieces(input: &Input<'_>) -> Vec<String> {
    let original = input.original;
    let mut pieces = Pieces(vec![String::new()]);
    pieces.attrs(&original.attrs);
    let generics = tokens(&original.generics);
    match &original.data {
        Data::Struct(data) => {
            pieces.push(&format!("struct {}{generics}", original.ident));
            pieces.fields(&data.fields);
        }
        Data::Enum(data) => {
            pieces.push(&format!("enum {}{generics}{{", original.ident));
            for variant in &data.variants {
                pieces.attrs(&variant.attrs);
                pieces.push(&variant.ident.to_string());
                pieces.fields(&variant.fields);
                pieces.push(",");
            }
            pieces.push("}");
        }
        Data::Union(_) => {}
    }
    pieces.0
}

struct Pieces(Vec<String>);

impl Pieces {
    fn push(&mut self, text: &str) {
        if let Some(last) = self.0.last_mut() {
            last.push_str(text);
        }
    }

    /// Ends the current piece where a field's type goes.
    fn hole(&mut self) {
        self.0.push(String::new());
    }

    fn fields(&mut self, fields: &Fields) {
        let (open, close) = match fields {
            Fields::Named(_) => ("{", "}"),
            Fields::Unnamed(_) => ("(", ")"),
            Fields::Unit => return,
        };
        self.push(open);
        for field in fields {
            self.attrs(&field.attrs);
            if let Some(name) = &field.ident {
                self.push(&format!("{name}:"));
            }
            self.hole();
            self.push(",");
        }
        self.push(close);
    }

    fn attrs(&mut self, attrs: &[Attribute]) {
        for attr in attrs {
            if attr.path().is_ident("serde") || attr.path().is_ident("ipc") {
                self.push(&tokens(attr));
            }
        }
    }
}

/// Tokens as text without the spaces `to_string` puts between them.
fn tokens(node: &impl ToTokens) -> String {
    node.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}
