//! A minimal reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just enough to find a
//! struct member's byte offset, looking through anonymous unions and structs.

use std::collections::HashMap;

use thiserror::Error;

/// Why BTF could not be read or a member not found.
#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    #[error("member {member} not found in struct {strukt}")]
    NoMember { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    /// Bit offset from the start of the containing struct.
    bit_offset: u32,
    /// Non-zero for bitfields.
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// size for INT/STRUCT/UNION/ENUM, referenced type for TYPEDEF/CONST/…
    size_or_type: u32,
    members: Vec<Member>,
}

/// Where a member lives: byte offset, and whether it is a bitfield (unusable directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLocation {
    /// Byte offset from the start of the outer struct.
    pub offset: u32,
    /// The member is a bitfield: its bytes cannot be read as a plain integer.
    pub bitfield: bool,
}

/// Parsed kernel BTF: types and their names.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl KernelBtf {
    /// Reads and parses `path` (normally `/sys/kernel/btf/vmlinux`).
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF bytes.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_bytes = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of range"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of range"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < types_bytes.len() {
            let name = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let base = at + i * 12;
                        let raw_offset = u32_at(types_bytes, base + 8)?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (raw_offset & 0xff_ffff, raw_offset >> 24)
                        } else {
                            (raw_offset, 0)
                        };
                        members.push(Member {
                            name: u32_at(types_bytes, base)?,
                            type_id: u32_at(types_bytes, base + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                KIND_TYPE_TAG => {}
                _ => {}
            }
            types.push(Type {
                name,
                kind,
                size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 && !ty.members.is_empty() {
                let name = btf.string(ty.name).to_string();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Finds `member` in `ty`, descending into anonymous struct/union members.
    fn find_in(
        &self,
        ty: &Type,
        member: &str,
        base_bits: u32,
        depth: u32,
    ) -> Option<MemberLocation> {
        if depth > 8 {
            return None;
        }
        for m in &ty.members {
            let bits = base_bits + m.bit_offset;
            if m.name != 0 && self.string(m.name) == member {
                return Some(MemberLocation {
                    offset: bits / 8,
                    bitfield: m.bitfield_size != 0 || !bits.is_multiple_of(8),
                });
            }
            if m.name == 0 {
                let inner = self.resolve(m.type_id)?;
                if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                    && let Some(found) = self.find_in(inner, member, bits, depth + 1)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The location of `strukt.member` (a dotted path like `__sk_common.skc_family`
    /// descends into named members).
    pub fn member(&self, strukt: &str, member: &str) -> Result<MemberLocation, BtfError> {
        let not_found = || BtfError::NoMember {
            strukt: strukt.to_string(),
            member: member.to_string(),
        };
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let mut ty = self.types.get(id as usize).ok_or_else(not_found)?;
        let mut offset = 0;
        let mut parts = member.split('.').peekable();
        while let Some(part) = parts.next() {
            let found = self.find_in(ty, part, 0, 0).ok_or_else(not_found)?;
            offset += found.offset;
            if parts.peek().is_none() {
                return Ok(MemberLocation {
                    offset,
                    bitfield: found.bitfield,
                });
            }
            // Descend into the named member's struct type.
            let member_type = ty
                .members
                .iter()
                .find(|m| m.name != 0 && self.string(m.name) == part)
                .map(|m| m.type_id);
            let next = match member_type {
                Some(type_id) => self.resolve(type_id),
                None => self.find_anonymous_member_type(ty, part, 0),
            };
            ty = next.ok_or_else(not_found)?;
        }
        Err(not_found())
    }

    fn find_anonymous_member_type(&self, ty: &Type, member: &str, depth: u32) -> Option<&Type> {
        if depth > 8 {
            return None;
        }
        for m in &ty.members {
            if m.name != 0 && self.string(m.name) == member {
                return self.resolve(m.type_id);
            }
            if m.name == 0
                && let Some(inner) = self.resolve(m.type_id)
                && let Some(found) = self.find_anonymous_member_type(inner, member, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }
}
