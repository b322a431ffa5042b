//! The RFC 6962 / RFC 9162 Merkle tree, algorithm only: leaf and node hashes (domain
//! separated), roots and proofs over a tree whose subtree hashes come from a lookup, and the
//! verifiers an auditor runs. No I/O: the store keeps the hashes, this module does the maths.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Why a proof was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// The index is not in the tree.
    #[error("index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The size.
        size: u64,
    },
    /// The sizes are not ordered.
    #[error("size {0} is greater than size {1}")]
    SizesOutOfOrder(u64, u64),
    /// The proof has the wrong number of hashes.
    #[error("proof has {got} hashes, expected {want}")]
    WrongLength {
        /// Hashes given.
        got: usize,
        /// Hashes expected.
        want: usize,
    },
    /// A hash is not 32 bytes.
    #[error("a hash is not 32 bytes")]
    BadHash,
    /// Consistency with the empty tree is meaningless and refused.
    #[error("consistency from the empty tree proves nothing")]
    EmptyTree,
    /// The computed root differs from the one claimed.
    #[error("computed root does not match")]
    Mismatch,
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Where subtree hashes come from: `perfect(level, index)` is the hash of the perfect subtree
/// covering leaves `[index << level, (index + 1) << level)` (level 0: a leaf hash).
pub trait Nodes {
    /// The error a lookup can fail with.
    type Error;
    /// A perfect subtree's hash.
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The hash of leaves `[start, end)` (MTH of RFC 6962), from perfect subtree hashes.
pub fn range_hash<N: Nodes>(nodes: &N, start: u64, end: u64) -> Result<Hash, N::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start % n == 0 {
        return nodes.perfect(n.trailing_zeros(), start / n);
    }
    let k = split(n);
    let left = range_hash(nodes, start, start + k)?;
    let right = range_hash(nodes, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of `size` leaves.
pub fn root<N: Nodes>(nodes: &N, size: u64) -> Result<Hash, N::Error> {
    range_hash(nodes, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 6962 PATH).
pub fn inclusion_proof<N: Nodes>(nodes: &N, index: u64, size: u64) -> Result<Vec<Hash>, N::Error> {
    fn path<N: Nodes>(
        nodes: &N,
        m: u64,
        start: u64,
        end: u64,
        out: &mut Vec<Hash>,
    ) -> Result<(), N::Error> {
        let n = end - start;
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            path(nodes, m, start, start + k, out)?;
            out.push(range_hash(nodes, start + k, end)?);
        } else {
            path(nodes, m - k, start + k, end, out)?;
            out.push(range_hash(nodes, start, start + k)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    if index < size {
        path(nodes, index, 0, size, &mut out)?;
    }
    Ok(out)
}

/// The consistency proof between the trees of `size1` and `size2` leaves (RFC 6962 PROOF).
pub fn consistency_proof<N: Nodes>(
    nodes: &N,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, N::Error> {
    fn sub<N: Nodes>(
        nodes: &N,
        m: u64,
        start: u64,
        end: u64,
        whole: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), N::Error> {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(range_hash(nodes, start, end)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            sub(nodes, m, start, start + k, whole, out)?;
            out.push(range_hash(nodes, start + k, end)?);
        } else {
            sub(nodes, m - k, start + k, end, false, out)?;
            out.push(range_hash(nodes, start, start + k)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    if 0 < size1 && size1 < size2 {
        sub(nodes, size1, 0, size2, true, &mut out)?;
    }
    Ok(out)
}

fn inner_size(index: u64, size: u64) -> usize {
    (64 - (index ^ (size - 1)).leading_zeros()) as usize
}

fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

fn to_hash(bytes: &[u8]) -> Result<Hash, ProofError> {
    bytes.try_into().map_err(|_| ProofError::BadHash)
}

fn to_hashes(proof: &[Vec<u8>]) -> Result<Vec<Hash>, ProofError> {
    proof.iter().map(|p| to_hash(p)).collect()
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root` (RFC 9162
/// §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let leaf = to_hash(leaf)?;
    let proof = to_hashes(proof)?;
    let inner = inner_size(index, size);
    let border = (index >> inner).count_ones() as usize;
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let got = chain_border_right(chain_inner(leaf, &proof[..inner], index), &proof[inner..]);
    if got.as_slice() == root {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of `size1` leaves
/// with `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Vec<u8>],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::SizesOutOfOrder(size1, size2));
    }
    if size1 == 0 {
        // Every tree extends the empty tree: a "proof" of it proves nothing, so it is refused.
        return Err(ProofError::EmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    }
    let proof = to_hashes(proof)?;
    let inner = inner_size(size1 - 1, size2);
    let border = ((size1 - 1) >> inner).count_ones() as usize;
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift;
    let (seed, start) = if size1 == 1 << shift {
        (to_hash(root1)?, 0)
    } else {
        (proof[0], 1)
    };
    if proof.len() != start + inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: start + inner + border,
        });
    }
    let proof = &proof[start..];
    let mask = (size1 - 1) >> shift;
    let hash1 = chain_border_right(
        chain_inner_right(seed, &proof[..inner], mask),
        &proof[inner..],
    );
    if hash1.as_slice() != root1 {
        return Err(ProofError::Mismatch);
    }
    let hash2 = chain_border_right(chain_inner(seed, &proof[..inner], mask), &proof[inner..]);
    if hash2.as_slice() == root2 {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

/// The perfect subtrees an append at `index` completes: `(level, index)` pairs from level 1
/// up, each the parent of two already-stored children. Level 0 (the leaf) is not listed.
pub fn completed_by_append(index: u64) -> impl Iterator<Item = (u32, u64)> {
    let count = (index + 1).trailing_zeros();
    (1..=count).map(move |level| (level, ((index + 1) >> level) - 1))
}

/// The perfect subtrees that make up a tree of `size` leaves, largest (leftmost) first, as
/// `(level, index)`: the only stored hashes an append at `size` can need.
pub fn frontier(size: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            out.push((level, start >> level));
            start += 1u64 << level;
        }
    }
    out
}

/// A perfect subtree's position: `(level, index)`, level 0 = leaves.
pub type NodeKey = (u32, u64);

/// A frontier hash an append needed was not given.
#[derive(Debug, thiserror::Error)]
#[error("frontier hash ({0}, {1}) missing")]
pub struct MissingFrontier(pub u32, pub u64);

/// Appends `leaves` (leaf hashes) at indices `first..` to a tree whose [`frontier`] hashes
/// at size `first` are given, and returns every new stored hash in order: each leaf's, and
/// each perfect subtree it completes (`(level, index)`, level 0 = leaf). Pure: the store
/// reads the frontier, calls this, and writes the result.
pub fn append(
    first: u64,
    frontier_hashes: &std::collections::HashMap<NodeKey, Hash>,
    leaves: &[Hash],
) -> Result<Vec<(NodeKey, Hash)>, MissingFrontier> {
    let mut fresh: std::collections::HashMap<NodeKey, Hash> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(leaves.len() * 2);
    for (k, leaf) in leaves.iter().enumerate() {
        let index = first + k as u64;
        let mut right = *leaf;
        fresh.insert((0, index), right);
        out.push(((0, index), right));
        for (level, node) in completed_by_append(index) {
            let key = (level - 1, 2 * node);
            let left = fresh
                .get(&key)
                .or_else(|| frontier_hashes.get(&key))
                .ok_or(MissingFrontier(key.0, key.1))?;
            right = node_hash(left, &right);
            fresh.insert((level, node), right);
            out.push(((level, node), right));
        }
    }
    Ok(out)
}

/// In-memory leaf hashes as [`Nodes`] (verification and tests).
pub struct Leaves<'a>(pub &'a [Hash]);

impl Nodes for Leaves<'_> {
    type Error = std::convert::Infallible;
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        let start = (index << level) as usize;
        let end = ((index + 1) << level) as usize;
        let slice = &self.0[start..end];
        if slice.len() == 1 {
            return Ok(slice[0]);
        }
        let mid = slice.len() / 2;
        let left = Leaves(&slice[..mid]).perfect(level - 1, 0)?;
        let right = Leaves(&slice[mid..]).perfect(level - 1, 0)?;
        Ok(node_hash(&left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_batches_store_the_same_hashes_as_the_tree_defines() {
        let leaves: Vec<Hash> = (0..100u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut stored: std::collections::HashMap<(u32, u64), Hash> = Default::default();
        let mut size = 0u64;
        for batch in [1usize, 2, 5, 8, 13, 1, 30, 40] {
            let frontier_hashes = frontier(size)
                .into_iter()
                .map(|k| (k, stored[&k]))
                .collect();
            let end = (size as usize + batch).min(leaves.len());
            let new =
                append(size, &frontier_hashes, &leaves[size as usize..end]).expect("frontier");
            stored.extend(new);
            size = end as u64;
            // Every stored perfect subtree hash matches the definition.
            for (&(level, index), hash) in &stored {
                assert_eq!(
                    *hash,
                    Leaves(&leaves[..size as usize])
                        .perfect(level, index)
                        .expect("in range")
                );
            }
        }
        assert_eq!(size, 100);
        assert!(matches!(
            append(3, &Default::default(), &leaves[..1]),
            Err(MissingFrontier(0, 2))
        ));
    }

    #[test]
    fn the_frontier_decomposes_the_size() {
        assert_eq!(frontier(0), vec![]);
        assert_eq!(frontier(1), vec![(0, 0)]);
        assert_eq!(frontier(6), vec![(2, 0), (1, 2)]);
        assert_eq!(frontier(7), vec![(2, 0), (1, 2), (0, 6)]);
        assert_eq!(frontier(8), vec![(3, 0)]);
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// RFC 6962 MTH, written the naive way, as the reference.
    fn mth(l: &[Hash]) -> Hash {
        match l.len() {
            0 => empty_root(),
            1 => l[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&l[..k]), &mth(&l[k..]))
            }
        }
    }

    #[test]
    fn roots_and_proofs_agree_with_the_naive_definition_and_the_verifiers() {
        for n in 1..=40u64 {
            let l = leaves(n);
            let nodes = Leaves(&l);
            let r = root(&nodes, n).unwrap();
            assert_eq!(r, mth(&l), "size {n}");
            for i in 0..n {
                let p: Vec<Vec<u8>> = inclusion_proof(&nodes, i, n)
                    .unwrap()
                    .iter()
                    .map(|h| h.to_vec())
                    .collect();
                verify_inclusion(i, n, &l[i as usize], &p, &r).unwrap();
            }
            for m in 1..=n {
                let p: Vec<Vec<u8>> = consistency_proof(&nodes, m, n)
                    .unwrap()
                    .iter()
                    .map(|h| h.to_vec())
                    .collect();
                verify_consistency(m, n, &p, &mth(&l[..m as usize]), &r).unwrap();
            }
        }
    }

    #[test]
    fn completed_nodes_follow_the_binary_counter() {
        assert_eq!(completed_by_append(0).collect::<Vec<_>>(), vec![]);
        assert_eq!(completed_by_append(1).collect::<Vec<_>>(), vec![(1, 0)]);
        assert_eq!(
            completed_by_append(3).collect::<Vec<_>>(),
            vec![(1, 1), (2, 0)]
        );
        assert_eq!(
            completed_by_append(7).collect::<Vec<_>>(),
            vec![(1, 3), (2, 1), (3, 0)]
        );
    }
}
