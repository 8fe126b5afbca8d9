//! A field type's *shape*: how `ipc_core::__private::Carry` carries it.
//!
//! Descriptor types are recognised by the last segment of their path, since
//! a macro sees names, not types. The shape mirrors the type with `Desc` at
//! descriptor leaves and `Plain` at every other leaf, or is `None` when
//! nothing inside needs more than serde. Containers of numbers have shapes
//! of their own (`Bytes`, `ByteArray`, `Numbers`, `NumberArray`): serde
//! would carry them an element at a time.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Error, GenericArgument, PathArguments, Type};

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

/// Element types of the one-copy path, besides `u8`.
const NUMBERS: &[&str] = &[
    "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f32", "f64", "bool", "char",
];

/// The shape of `ty`, or `None` when serde alone carries it; pushes an
/// error for a descriptor where none can travel (a map key).
pub fn of(ty: &Type, errors: &mut Vec<Error>) -> Option<TokenStream> {
    walk(ty, Leaves::ByName, errors)
}

/// The shape `#[ipc(fd)]` asks for: the std containers around the type are
/// walked as usual, and whatever is inside them is one descriptor.
pub fn descriptor(ty: &Type, errors: &mut Vec<Error>) -> TokenStream {
    walk(ty, Leaves::Descriptors, errors)
        .unwrap_or_else(|| quote!(::ipc_core::__private::shape::Desc))
}

/// What the leaves of a walked type are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Descriptors where their name says so, serde values elsewhere.
    ByName,
    /// Descriptors, whatever their name (`#[ipc(fd)]`).
    Descriptors,
}

fn walk(ty: &Type, leaves: Leaves, errors: &mut Vec<Error>) -> Option<TokenStream> {
    let shape = quote!(::ipc_core::__private::shape);
    let numbers = leaves == Leaves::ByName;
    let leaf = || (leaves == Leaves::Descriptors).then(|| quote!(#shape::Desc));
    match ty {
        Type::Paren(inner) => walk(&inner.elem, leaves, errors),
        Type::Group(inner) => walk(&inner.elem, leaves, errors),
        // Bytes, not a tuple of u8: one copy, not a call per byte.
        Type::Array(array) if numbers && is_u8(&array.elem) => Some(quote!(#shape::ByteArray)),
        Type::Array(array) if numbers && is_number(&array.elem) => {
            Some(quote!(#shape::NumberArray))
        }
        Type::Array(array) => walk(&array.elem, leaves, errors).map(|s| quote!(#shape::Array<#s>)),
        Type::Tuple(tuple) if tuple.elems.is_empty() => leaf(),
        Type::Tuple(tuple) => {
            let shapes: Vec<Option<TokenStream>> = tuple
                .elems
                .iter()
                .map(|t| walk(t, leaves, errors))
                .collect();
            if shapes.iter().all(Option::is_none) || shapes.len() > 8 {
                return None;
            }
            let elems = shapes
                .into_iter()
                .map(|s| s.unwrap_or_else(|| quote!(#shape::Plain)));
            Some(quote!((#(#elems,)*)))
        }
        Type::Path(path) if path.qself.is_none() => {
            let Some(last) = path.path.segments.last() else {
                return leaf();
            };
            let name = last.ident.to_string();
            if DESCRIPTORS.contains(&name.as_str()) && last.arguments.is_empty() {
                return Some(quote!(#shape::Desc));
            }
            if name == "Memfd" && last.arguments.is_empty() {
                return Some(quote!(#shape::Memfd));
            }
            let args = type_arguments(&last.arguments);
            match (name.as_str(), args.as_slice()) {
                ("HashMap", [key, value] | [key, value, _]) | ("BTreeMap", [key, value]) => {
                    if of(key, &mut Vec::new()).is_some_and(|s| carries_descriptors(&s)) {
                        errors.push(Error::new_spanned(
                            key,
                            "a descriptor cannot be a map key: keys travel as plain serde; key the \
                             map by a name or a number and keep the descriptor in the value, or \
                             make the key an `ipc_core::Fd<T>` of a type that is `Hash + Eq`",
                        ));
                    }
                    return walk(value, leaves, errors).map(|s| quote!(#shape::Map<#s>));
                }
                // One copy, not a call per element.
                ("Vec", [elem]) if numbers && is_u8(elem) => return Some(quote!(#shape::Bytes)),
                ("Vec", [elem]) if numbers && is_number(elem) => {
                    return Some(quote!(#shape::Numbers));
                }
                ("Box", [Type::Slice(slice)])
                    if numbers && (is_u8(&slice.elem) || is_number(&slice.elem)) =>
                {
                    return Some(quote!(#shape::Numbers));
                }
                ("Box", [Type::Slice(slice)]) => {
                    return walk(&slice.elem, leaves, errors).map(|s| quote!(#shape::Seq<#s>));
                }
                _ => {}
            }
            let wrapper = match name.as_str() {
                "Option" => quote!(#shape::Opt),
                "Vec" | "VecDeque" => quote!(#shape::Seq),
                "Box" | "Arc" | "Rc" => quote!(#shape::Boxed),
                _ => return leaf(),
            };
            match args.as_slice() {
                [inner] => walk(inner, leaves, errors).map(|s| quote!(#wrapper<#s>)),
                _ => leaf(),
            }
        }
        _ => leaf(),
    }
}

/// The shape `#[ipc(pod)]` asks for, or `None` when `ty` is not a container
/// it applies to.
pub fn pod(ty: &Type) -> Option<TokenStream> {
    let pod = quote!(::ipc_core::__private::shape::Pod);
    match ty {
        Type::Paren(inner) => self::pod(&inner.elem),
        Type::Group(inner) => self::pod(&inner.elem),
        Type::Array(_) => Some(pod),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            match (
                last.ident.to_string().as_str(),
                type_arguments(&last.arguments).as_slice(),
            ) {
                ("Vec", [_]) | ("Box", [Type::Slice(_)]) => Some(pod),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `shape` (from [`of`]) has a descriptor leaf, rather than only
/// numbers carried as bytes.
pub fn carries_descriptors(shape: &TokenStream) -> bool {
    shape.clone().into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "Desc" || ident == "Memfd",
        proc_macro2::TokenTree::Group(group) => carries_descriptors(&group.stream()),
        _ => false,
    })
}

/// Whether `shape` is one descriptor, with nothing around it.
pub fn is_descriptor(shape: &TokenStream) -> bool {
    shape.to_string().replace(' ', "") == "::ipc_core::__private::shape::Desc"
}

fn is_u8(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("u8"))
}

fn is_number(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.get_ident().is_some_and(|i| NUMBERS.iter().any(|n| i == n)))
}

fn type_arguments(arguments: &PathArguments) -> Vec<&Type> {
    let PathArguments::AngleBracketed(args) = arguments else {
        return Vec::new();
    };
    args.args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn shape(ty: Type) -> Option<String> {
        let mut errors = Vec::new();
        let shape = of(&ty, &mut errors).map(|s| {
            s.to_string()
                .replace(" ", "")
                .replace("::ipc_core::__private::shape::", "")
        });
        assert!(errors.is_empty());
        shape
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
    fn std_containers_are_walked() {
        assert_eq!(
            shape(parse_quote!(HashMap<String, File>)).as_deref(),
            Some("Map<Desc>")
        );
        assert_eq!(
            shape(parse_quote!(std::collections::HashMap<String, Vec<File>, S>)).as_deref(),
            Some("Map<Seq<Desc>>")
        );
        assert_eq!(
            shape(parse_quote!(BTreeMap<u32, OwnedFd>)).as_deref(),
            Some("Map<Desc>")
        );
        assert_eq!(
            shape(parse_quote!(Arc<File>)).as_deref(),
            Some("Boxed<Desc>")
        );
        assert_eq!(
            shape(parse_quote!(Rc<File>)).as_deref(),
            Some("Boxed<Desc>")
        );
        assert_eq!(
            shape(parse_quote!(VecDeque<File>)).as_deref(),
            Some("Seq<Desc>")
        );
        assert_eq!(
            shape(parse_quote!(Box<[File]>)).as_deref(),
            Some("Seq<Desc>")
        );
        assert_eq!(shape(parse_quote!(HashMap<String, u32>)), None);
        assert_eq!(shape(parse_quote!(SmallVec<[File; 2]>)), None);
    }

    #[test]
    fn a_descriptor_as_a_map_key_is_an_error() {
        let mut errors = Vec::new();
        of(&parse_quote!(HashMap<File, u32>), &mut errors);
        of(&parse_quote!(BTreeMap<(u8, OwnedFd), File>), &mut errors);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn numbers_have_their_own_shapes_and_plain_types_none() {
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
        assert_eq!(shape(parse_quote!(Vec<u16>)).as_deref(), Some("Numbers"));
        assert_eq!(shape(parse_quote!(Box<[f64]>)).as_deref(), Some("Numbers"));
        assert_eq!(shape(parse_quote!(Box<[u8]>)).as_deref(), Some("Numbers"));
        assert_eq!(
            shape(parse_quote!([char; 4])).as_deref(),
            Some("NumberArray")
        );
        assert_eq!(
            shape(parse_quote!((Vec<bool>, String))).as_deref(),
            Some("(Numbers,Plain,)")
        );
        assert!(!carries_descriptors(
            &of(&parse_quote!(Option<[u8; 4]>), &mut Vec::new()).unwrap()
        ));
        assert!(carries_descriptors(
            &of(&parse_quote!(([u8; 4], Vec<File>)), &mut Vec::new()).unwrap()
        ));
        assert!(carries_descriptors(
            &of(&parse_quote!(memfd::Memfd), &mut Vec::new()).unwrap()
        ));
        assert_eq!(shape(parse_quote!(String)), None);
        assert_eq!(shape(parse_quote!(Vec<usize>)), None);
        assert_eq!(shape(parse_quote!((u8, String))), None);
    }

    #[test]
    fn fd_makes_the_innermost_type_a_descriptor() {
        let fd = |ty: Type| {
            descriptor(&ty, &mut Vec::new())
                .to_string()
                .replace(' ', "")
                .replace("::ipc_core::__private::shape::", "")
        };
        assert_eq!(fd(parse_quote!(T)), "Desc");
        assert_eq!(fd(parse_quote!(Option<T>)), "Opt<Desc>");
        assert_eq!(fd(parse_quote!(Vec<(u32, Fd)>)), "Seq<(Desc,Desc,)>");
        assert_eq!(fd(parse_quote!(Vec<u8>)), "Seq<Desc>");
        assert_eq!(fd(parse_quote!(HashMap<String, T>)), "Map<Desc>");
    }

    #[test]
    fn pod_applies_to_vectors_slices_and_arrays() {
        assert!(pod(&parse_quote!(Vec<Point>)).is_some());
        assert!(pod(&parse_quote!(Box<[Point]>)).is_some());
        assert!(pod(&parse_quote!([Point; 4])).is_some());
        assert!(pod(&parse_quote!(Option<Vec<Point>>)).is_none());
        assert!(pod(&parse_quote!(Point)).is_none());
    }
}
