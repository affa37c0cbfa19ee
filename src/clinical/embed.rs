//! Embeddings for retrieval. The default needs no download and no network: feature hashing
//! of words, word pairs and character trigrams into [`DIM`] signed buckets, L2-normalised.
//! It is deterministic (same text, same vector, on every machine), so the index can be
//! rebuilt anywhere. Titan Text Embeddings V2 (`bedrock::Bedrock::embed_titan`, asked for
//! the same dimension) is the production alternative; every chunk records its model.

use sha2::{Digest, Sha256};

/// Dimension of every stored embedding (the `vector(512)` column).
pub const DIM: usize = 512;
/// The local embedder's model name, recorded per chunk.
pub const HASHING_MODEL: &str = "hearth-hashing-v1";

/// Feature-hashing embedding of `text`.
pub fn hashing_embedding(text: &str) -> Vec<f32> {
    let mut vector = vec![0f32; DIM];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '.' && c != '%')
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    for word in &words {
        add(&mut vector, "w", word, 1.0);
        let padded: Vec<char> = format!("#{word}#").chars().collect();
        for gram in padded.windows(3) {
            add(&mut vector, "c", &gram.iter().collect::<String>(), 0.5);
        }
    }
    for pair in words.windows(2) {
        add(&mut vector, "b", &format!("{} {}", pair[0], pair[1]), 0.7);
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// One feature: its bucket and sign from a hash (SHA-256: stable across platforms and
/// releases, unlike `std`'s hasher).
fn add(vector: &mut [f32], kind: &str, feature: &str, weight: f32) {
    let digest = Sha256::digest(format!("{kind}:{feature}").as_bytes());
    let bucket = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]) as usize % DIM;
    let sign = if digest[4] & 1 == 0 { 1.0 } else { -1.0 };
    vector[bucket] += sign * weight;
}

/// Titan Text Embeddings V2, asked for [`DIM`] dimensions.
pub const TITAN_MODEL: &str = "amazon.titan-embed-text-v2:0";

/// The embedder of a tenant's index: the local one, or Titan on Bedrock (only with the
/// tenant's BAA and Bedrock configured: chunk text is PHI).
#[derive(Debug, Clone)]
pub enum Embedder {
    Hashing,
    Titan(super::bedrock::Bedrock),
}

impl Embedder {
    /// The model name recorded with every chunk it embeds.
    pub fn model(&self) -> &'static str {
        match self {
            Embedder::Hashing => HASHING_MODEL,
            Embedder::Titan(_) => TITAN_MODEL,
        }
    }

    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, super::bedrock::BedrockError> {
        match self {
            Embedder::Hashing => Ok(hashing_embedding(text)),
            Embedder::Titan(client) => {
                let (vector, _) = client.embed_titan(TITAN_MODEL, text, DIM as u32).await?;
                Ok(vector)
            }
        }
    }
}

/// `[a,b,...]`: pgvector's text form.
pub fn to_pgvector(vector: &[f32]) -> String {
    let parts: Vec<String> = vector.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn embeddings_are_deterministic_normalised_and_sensible() {
        let a1c = hashing_embedding("Hemoglobin A1c 7.2 % on 2026-03-01");
        assert_eq!(a1c.len(), DIM);
        assert_eq!(a1c, hashing_embedding("Hemoglobin A1c 7.2 % on 2026-03-01"));
        assert!((cosine(&a1c, &a1c) - 1.0).abs() < 1e-4);
        let question = hashing_embedding("when was the last hemoglobin a1c");
        let unrelated = hashing_embedding("Penicillin allergy, hives");
        assert!(cosine(&a1c, &question) > cosine(&unrelated, &question));
        assert!(hashing_embedding("").iter().all(|x| *x == 0.0));
        assert!(to_pgvector(&[0.5, -1.0]).starts_with("[0.5,-1"));
    }
}
