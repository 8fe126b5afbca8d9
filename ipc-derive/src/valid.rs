//! Checks on the input: what cannot travel is a compile error with a span
//! on the offending part.

use syn::visit::Visit;
use syn::{Error, GenericParam};

use crate::ast::Input;

/// Pushes an error for each lifetime parameter and each field that borrows.
pub fn check(input: &Input<'_>, errors: &mut Vec<Error>) {
    for param in &input.original.generics.params {
        if let GenericParam::Lifetime(lifetime) = param {
            errors.push(Error::new_spanned(
                lifetime,
                "an IpcMessage cannot have lifetime parameters: a received message owns all \
                 it holds; use owned types (String, Vec<u8>) instead of borrows",
            ));
        }
    }
    for field in input.fields() {
        let mut finder = Borrow(None);
        finder.visit_type(&field.original.ty);
        if let Some(error) = finder.0 {
            errors.push(error);
        }
    }
}

const BORROW: &str = "a field of an IpcMessage cannot borrow: the receiver has nothing to \
                      borrow from; use an owned type (String instead of &str, Vec<T> instead of &[T])";

/// Finds the first reference or lifetime in a field's type.
struct Borrow(Option<Error>);

impl<'ast> Visit<'ast> for Borrow {
    fn visit_type_reference(&mut self, reference: &'ast syn::TypeReference) {
        if self.0.is_none() {
            self.0 = Some(Error::new_spanned(reference, BORROW));
        }
    }

    fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
        if self.0.is_none() {
            self.0 = Some(Error::new_spanned(lifetime, BORROW));
        }
    }
}
