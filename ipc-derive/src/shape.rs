//! A field type's *shape*: how `ipc_core::__private::Carry` carries it.
//!
//! Descriptor types are recognised by the last segment of their path, since
//! a macro sees names, not types. The shape mirrors the type with `Desc` at
//! descriptor leaves and `Plain` at every other leaf, or is `None` when no
//! descriptor is inside (the field is then plain serde). `Vec<u8>` and
//! `[u8; N]` have shapes of their own, `Bytes` and `ByteArray`: serde would
//! carry them a byte at a time.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{GenericArgument, PathArguments, Type};

/// Last path segments of foreign descriptor types: `AsFd + From<OwnedFd>`.
const DESCRIPTORS: &[&str] = &[
    "OwnedFd",
    "File",
    "UnixStream",
    "UnixListener",
    "UnixDatagram",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
];

/// The shape of `ty`, or `None` when it holds no recognised descriptor.
pub fn of(ty: &Type) -> Option<TokenStream> {
    let shape = quote!(::ipc_core::__private::shape);
    match ty {
        Type::Paren(inner) => of(&inner.elem),
        Type::Group(inner) => of(&inner.elem),
        // Bytes, not a tuple of u8: one copy, not a call per byte.
        Type::Array(array) if is_u8(&array.elem) => Some(quote!(#shape::ByteArray)),
        Type::Array(array) => of(&array.elem).map(|s| quote!(#shape::Array<#s>)),
        Type::Tuple(tuple) => {
            let shapes: Vec<Option<TokenStream>> = tuple.elems.iter().map(of).collect();
            if shapes.iter().all(Option::is_none) || shapes.len() > 8 {
                return None;
            }
            let elems = shapes
                .into_iter()
                .map(|s| s.unwrap_or_else(|| quote!(#shape::Plain)));
            Some(quote!((#(#elems,)*)))
        }
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            let name = last.ident.to_string();
            if DESCRIPTORS.contains(&name.as_str()) && last.arguments.is_empty() {
                return Some(quote!(#shape::Desc));
            }
            if name == "Memfd" && last.arguments.is_empty() {
                return Some(quote!(#shape::Memfd));
            }
            let inner = single_type_argument(&last.arguments);
            if name == "Vec" && inner.is_some_and(is_u8) {
                // Bytes, not a sequence of u8: one copy, not a call per byte.
                return Some(quote!(#shape::Bytes));
            }
            let wrapper = match name.as_str() {
                "Option" => quote!(#shape::Opt),
                "Vec" => quote!(#shape::Seq),
                "Box" => quote!(#shape::Boxed),
                _ => return None,
            };
            of(inner?).map(|s| quote!(#wrapper<#s>))
        }
        _ => None,
    }
}

/// Whether `shape` (from [`of`]) has a descriptor leaf, rather than only
/// bytes carried as bytes.
pub fn carries_descriptors(shape: &TokenStream) -> bool {
    shape.clone().into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "Desc" || ident == "Memfd",
        proc_macro2::TokenTree::Group(group) => carries_descriptors(&group.stream()),
        _ => false,
    })
}

/// The shape that `#[ipc(fd)]` asks for.
pub fn descriptor() -> TokenStream {
    quote!(::ipc_core::__private::shape::Desc)
}

fn is_u8(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("u8"))
}

fn single_type_argument(arguments: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let first = types.next()?;
    types.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn shape(ty: Type) -> Option<String> {
        of(&ty).map(|s| {
            s.to_string()
                .replace(" ", "")
                .replace("::ipc_core::__private::shape::", "")
        })
    }

    #[test]
    fn descriptors_are_found_at_any_depth() {
        assert_eq!(shape(parse_quote!(std::fs::File)).as_deref(), Some("Desc"));
        assert_eq!(
            shape(parse_quote!(Vec<Option<File>>)).as_deref(),
            Some("Seq<Opt<Desc>>")
        );
        assert_eq!(
            shape(parse_quote!([OwnedFd; 3])).as_deref(),
            Some("Array<Desc>")
        );
        assert_eq!(
            shape(parse_quote!(Box<(String, UnixStream)>)).as_deref(),
            Some("Boxed<(Plain,Desc,)>")
        );
        assert_eq!(shape(parse_quote!(memfd::Memfd)).as_deref(), Some("Memfd"));
    }

    #[test]
    fn bytes_have_their_own_shape_and_plain_types_none() {
        assert_eq!(shape(parse_quote!(Vec<u8>)).as_deref(), Some("Bytes"));
        assert_eq!(
            shape(parse_quote!(Option<Vec<u8>>)).as_deref(),
            Some("Opt<Bytes>")
        );
        assert_eq!(shape(parse_quote!([u8; 32])).as_deref(), Some("ByteArray"));
        assert_eq!(
            shape(parse_quote!(Vec<[u8; N]>)).as_deref(),
            Some("Seq<ByteArray>")
        );
        assert_eq!(
            shape(parse_quote!([[u8; 4]; 2])).as_deref(),
            Some("Array<ByteArray>")
        );
        assert!(!carries_descriptors(
            &of(&parse_quote!(Option<[u8; 4]>)).unwrap()
        ));
        assert!(carries_descriptors(
            &of(&parse_quote!(([u8; 4], Vec<File>))).unwrap()
        ));
        assert!(carries_descriptors(
            &of(&parse_quote!(memfd::Memfd)).unwrap()
        ));
        assert_eq!(shape(parse_quote!(String)), None);
        assert_eq!(shape(parse_quote!(Vec<u16>)), None);
        assert_eq!(shape(parse_quote!([u16; 4])), None);
        assert_eq!(shape(parse_quote!((u8, String))), None);
        assert_eq!(shape(parse_quote!(HashMap<String, u32>)), None);
    }
}
