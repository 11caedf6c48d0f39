//! The JSON of the OpenAI-compatible `POST /embeddings` call: the request
//! body, the checks on the answer (count, order by `index`, dimensions,
//! finite numbers), and the server's error message. Pure, no I/O.

use serde::{Deserialize, Serialize};

/// `{"model": ..., "input": [...]}`.
#[derive(Serialize)]
pub(super) struct EmbeddingsRequest<'a> {
    pub model: &'a str,
    pub input: &'a [String],
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    /// Position of the input; OpenAI, vLLM, TEI and Ollama send it. When no
    /// item has one, the items are taken in order.
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// Why a 2xx answer cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ResponseProblem {
    Malformed(String),
    Count {
        expected: usize,
        got: usize,
    },
    Dimension {
        expected: usize,
        got: usize,
        index: usize,
    },
}

/// The vectors of a successful answer, in input order. All have the same
/// (non-zero) dimension and only finite values.
pub(super) fn parse_embeddings(
    body: &[u8],
    expected: usize,
) -> Result<Vec<Vec<f32>>, ResponseProblem> {
    let response: EmbeddingsResponse = serde_json::from_slice(body).map_err(|e| {
        ResponseProblem::Malformed(format!("{e}; body starts with {:?}", snippet(body)))
    })?;
    let items = response.data;
    if items.len() != expected {
        return Err(ResponseProblem::Count {
            expected,
            got: items.len(),
        });
    }

    let mut ordered: Vec<Option<Vec<f32>>> = vec![None; expected];
    let with_index = items.iter().filter(|item| item.index.is_some()).count();
    if with_index != 0 && with_index != expected {
        return Err(ResponseProblem::Malformed(
            "some items of data[] have an index and some do not".into(),
        ));
    }
    for (position, item) in items.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        let slot = ordered.get_mut(index).ok_or_else(|| {
            ResponseProblem::Malformed(format!(
                "index {index} is out of range for {expected} inputs"
            ))
        })?;
        if slot.replace(item.embedding).is_some() {
            return Err(ResponseProblem::Malformed(format!(
                "index {index} appears twice"
            )));
        }
    }
    // `expected` distinct in-range indexes fill every slot.
    let vectors: Vec<Vec<f32>> = ordered.into_iter().flatten().collect();

    if let Some(first) = vectors.first() {
        if first.is_empty() {
            return Err(ResponseProblem::Malformed("embedding 0 is empty".into()));
        }
        let dimension = first.len();
        for (index, vector) in vectors.iter().enumerate() {
            if vector.len() != dimension {
                return Err(ResponseProblem::Dimension {
                    expected: dimension,
                    got: vector.len(),
                    index,
                });
            }
            if vector.iter().any(|v| !v.is_finite()) {
                return Err(ResponseProblem::Malformed(format!(
                    "embedding {index} has a value that is not a finite 32-bit float"
                )));
            }
        }
    }
    Ok(vectors)
}

/// OpenAI's `error.code` (e.g. `insufficient_quota`), if the body has one.
pub(super) fn error_code(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = json.get("error")?;
    error
        .get("code")
        .or_else(|| error.get("type"))?
        .as_str()
        .map(str::to_string)
}

/// At most 300 characters of `bytes`, control characters replaced, for
/// error messages.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .trim()
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, expected: usize) -> Result<Vec<Vec<f32>>, ResponseProblem> {
        parse_embeddings(body.as_bytes(), expected)
    }

    #[test]
    fn request_body_is_model_and_input_list() {
        let input = vec!["a".to_string(), "b".to_string()];
        let body = serde_json::to_string(&EmbeddingsRequest {
            model: "m",
            input: &input,
        })
        .unwrap();
        assert_eq!(body, r#"{"model":"m","input":["a","b"]}"#);
    }

    #[test]
    fn vectors_are_returned_in_input_order_by_index() {
        let body = r#"{"object":"list","model":"m","data":[
            {"object":"embedding","index":1,"embedding":[2.0,2.5]},
            {"object":"embedding","index":0,"embedding":[1.0,1.5]}],
            "usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        assert_eq!(parse(body, 2), Ok(vec![vec![1.0, 1.5], vec![2.0, 2.5]]));
    }

    #[test]
    fn items_without_index_are_taken_in_order() {
        let body = r#"{"data":[{"embedding":[1]},{"embedding":[2]}]}"#;
        assert_eq!(parse(body, 2), Ok(vec![vec![1.0], vec![2.0]]));
    }

    #[test]
    fn an_empty_answer_for_no_input_is_fine() {
        assert_eq!(parse(r#"{"data":[]}"#, 0), Ok(vec![]));
    }

    #[test]
    fn a_wrong_number_of_vectors_is_a_count_mismatch() {
        let body = r#"{"data":[{"index":0,"embedding":[1]}]}"#;
        assert_eq!(
            parse(body, 2),
            Err(ResponseProblem::Count {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn vectors_of_different_lengths_are_a_dimension_mismatch() {
        let body = r#"{"data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[1,2,3]}]}"#;
        assert_eq!(
            parse(body, 2),
            Err(ResponseProblem::Dimension {
                expected: 2,
                got: 3,
                index: 1
            })
        );
    }

    #[test]
    fn broken_answers_are_malformed() {
        let cases = [
            ("<html>gateway</html>", 1),
            (r#"{"data":[{"index":0,"embedding":"AAAA"}]}"#, 1),
            (r#"{"data":[{"index":0,"embedding":[1,null]}]}"#, 1),
            (r#"{"data":[{"index":0,"embedding":[1e39]}]}"#, 1),
            (r#"{"data":[{"index":0,"embedding":[]}]}"#, 1),
            (
                r#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}]}"#,
                2,
            ),
            (r#"{"data":[{"index":5,"embedding":[1]}]}"#, 1),
            (
                r#"{"data":[{"index":0,"embedding":[1]},{"embedding":[1]}]}"#,
                2,
            ),
            (r#"{"embeddings":[[1]]}"#, 1),
        ];
        for (body, expected) in cases {
            assert!(
                matches!(parse(body, expected), Err(ResponseProblem::Malformed(_))),
                "{body}: {:?}",
                parse(body, expected)
            );
        }
    }

    #[test]
    fn error_codes_are_read_from_openais_shape() {
        let openai = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(error_code(openai).as_deref(), Some("invalid_api_key"));
    }
}
