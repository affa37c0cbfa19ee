//! The FHIRPath subset the search-parameter registry needs, evaluated over FHIR JSON.
//!
//! Grammar (precedence low to high, as in FHIRPath): `and`; `=` `!=`; `|`; `as` `is`;
//! postfix `.member`, `.fn(args)`, `[n]`; primary: `(expr)`, 'string', true/false, integer,
//! identifier, function call. Functions: `where(cond)`, `as(T)`, `ofType(T)`, `is(T)`,
//! `exists()`, `resolve()`, `extension('url')`, `first()`. A test parses every expression in
//! `profiles/search/parameters.json`.
//!
//! JSON has no types; a node gets its FHIR type from the choice suffix it was found under
//! (`valueQuantity` is a `Quantity`) or from `resolve()` (the reference's target type).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Union(Vec<Expr>),
    And(Box<Expr>, Box<Expr>),
    Equals {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    As(Box<Expr>, String),
    Is(Box<Expr>, String),
    /// A primary followed by steps.
    Path(Box<Primary>, Vec<Step>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Primary {
    Group(Expr),
    Str(String),
    Bool(bool),
    Int(i64),
    /// A member of the context, or the context's own type name.
    Identifier(String),
    /// A function applied to the context (`resolve()` inside `where`).
    Call(Function),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Member(String),
    Call(Function),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Function {
    Where(Box<Expr>),
    As(String),
    OfType(String),
    Is(String),
    Exists,
    Resolve,
    Extension(String),
    First,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath: {message} at offset {offset}")]
pub struct ParseError {
    pub message: String,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Dot,
    Comma,
    Pipe,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eq,
    Ne,
}

fn tokenize(src: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |message: &str, offset| ParseError {
        message: message.into(),
        offset,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'.' => {
                out.push((start, Token::Dot));
                i += 1
            }
            b',' => {
                out.push((start, Token::Comma));
                i += 1
            }
            b'|' => {
                out.push((start, Token::Pipe));
                i += 1
            }
            b'(' => {
                out.push((start, Token::LParen));
                i += 1
            }
            b')' => {
                out.push((start, Token::RParen));
                i += 1
            }
            b'[' => {
                out.push((start, Token::LBracket));
                i += 1
            }
            b']' => {
                out.push((start, Token::RBracket));
                i += 1
            }
            b'=' => {
                out.push((start, Token::Eq));
                i += 1
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                out.push((start, Token::Ne));
                i += 2
            }
            b'\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(err("unterminated string", start)),
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            if let Some(&n) = bytes.get(i + 1) {
                                s.push(n as char);
                            }
                            i += 2;
                        }
                        Some(_) => {
                            let ch = src[i..]
                                .chars()
                                .next()
                                .ok_or_else(|| err("bad string", i))?;
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push((start, Token::Str(s)));
            }
            b'0'..=b'9' => {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let n = src[start..i]
                    .parse()
                    .map_err(|_| err("bad integer", start))?;
                out.push((start, Token::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'$')
                {
                    i += 1;
                }
                out.push((start, Token::Ident(src[start..i].to_owned())));
            }
            _ => return Err(err("unexpected character", start)),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(o, _)| *o)
    }
    fn error(&self, message: &str) -> ParseError {
        ParseError {
            message: message.into(),
            offset: self.offset(),
        }
    }
    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &Token, what: &str) -> Result<(), ParseError> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(self.error(what))
        }
    }
    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Token::Ident(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.error("expected a name")),
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.equality()?;
        while self.keyword("and") {
            let right = self.equality()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, ParseError> {
        let left = self.union()?;
        let negated = match self.peek() {
            Some(Token::Eq) => false,
            Some(Token::Ne) => true,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.union()?;
        Ok(Expr::Equals {
            left: Box::new(left),
            right: Box::new(right),
            negated,
        })
    }

    fn union(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.type_expr()?];
        while self.eat(&Token::Pipe) {
            parts.push(self.type_expr()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Union(parts)
        })
    }

    fn type_expr(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.postfix()?;
        loop {
            if self.keyword("as") {
                e = Expr::As(Box::new(e), self.type_name()?);
            } else if self.keyword("is") {
                e = Expr::Is(Box::new(e), self.type_name()?);
            } else {
                return Ok(e);
            }
        }
    }

    fn type_name(&mut self) -> Result<String, ParseError> {
        let mut name = self.ident()?;
        // `FHIR.Quantity` / `System.String`: keep the last part.
        while self.eat(&Token::Dot) {
            name = self.ident()?;
        }
        Ok(name)
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let primary = self.primary()?;
        let mut steps = Vec::new();
        loop {
            if self.eat(&Token::Dot) {
                let name = self.ident()?;
                if self.peek() == Some(&Token::LParen) {
                    steps.push(Step::Call(self.call(&name)?));
                } else {
                    steps.push(Step::Member(name));
                }
            } else if self.eat(&Token::LBracket) {
                let Some(Token::Int(n)) = self.peek().cloned() else {
                    return Err(self.error("expected an index"));
                };
                self.pos += 1;
                self.expect(&Token::RBracket, "expected ]")?;
                steps.push(Step::Index(
                    usize::try_from(n).map_err(|_| self.error("bad index"))?,
                ));
            } else {
                return Ok(Expr::Path(Box::new(primary), steps));
            }
        }
    }

    fn primary(&mut self) -> Result<Primary, ParseError> {
        match self.peek().cloned() {
            Some(Token::LParen) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(&Token::RParen, "expected )")?;
                Ok(Primary::Group(e))
            }
            Some(Token::Str(s)) => {
                self.pos += 1;
                Ok(Primary::Str(s))
            }
            Some(Token::Int(n)) => {
                self.pos += 1;
                Ok(Primary::Int(n))
            }
            Some(Token::Ident(w)) => {
                self.pos += 1;
                match w.as_str() {
                    "true" => Ok(Primary::Bool(true)),
                    "false" => Ok(Primary::Bool(false)),
                    _ if self.peek() == Some(&Token::LParen) => Ok(Primary::Call(self.call(&w)?)),
                    _ => Ok(Primary::Identifier(w)),
                }
            }
            _ => Err(self.error("expected an expression")),
        }
    }

    fn call(&mut self, name: &str) -> Result<Function, ParseError> {
        self.expect(&Token::LParen, "expected (")?;
        let f = match name {
            "where" => Function::Where(Box::new(self.expr()?)),
            "as" => Function::As(self.type_name()?),
            "ofType" => Function::OfType(self.type_name()?),
            "is" => Function::Is(self.type_name()?),
            "exists" => Function::Exists,
            "resolve" => Function::Resolve,
            "first" => Function::First,
            "extension" => match self.peek().cloned() {
                Some(Token::Str(url)) => {
                    self.pos += 1;
                    Function::Extension(url)
                }
                _ => return Err(self.error("extension() takes a string")),
            },
            _ => return Err(self.error("unsupported function")),
        };
        self.expect(&Token::RParen, "expected )")?;
        Ok(f)
    }
}

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        len: src.len(),
    };
    let e = parser.expr()?;
    if parser.pos != parser.tokens.len() {
        return Err(parser.error("unexpected text after the expression"));
    }
    Ok(e)
}

/// One item of a FHIRPath collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// A JSON value and the FHIR type it is known to have, if known.
    Json(&'a Value, Option<String>),
    Bool(bool),
    Str(String),
    Int(i64),
    /// What `resolve()` gives: only its type is known (the reference's target type).
    Resolved(String),
}

impl<'a> Node<'a> {
    fn type_name(&self) -> Option<&str> {
        match self {
            Node::Json(Value::Object(o), None) => o.get("resourceType").and_then(Value::as_str),
            Node::Json(_, t) => t.as_deref(),
            Node::Bool(_) => Some("boolean"),
            Node::Str(_) => Some("string"),
            Node::Int(_) => Some("integer"),
            Node::Resolved(t) => Some(t),
        }
    }

    fn is_type(&self, wanted: &str) -> bool {
        // FHIR writes `dateTime`, some expressions `DateTime`: compare ignoring the first letter's case.
        self.type_name().is_some_and(|t| {
            let (a, b) = (t.as_bytes(), wanted.as_bytes());
            a.len() == b.len()
                && !a.is_empty()
                && a[0].eq_ignore_ascii_case(&b[0])
                && a[1..] == b[1..]
        })
    }
}

/// FHIR type names that may follow a choice element's name in JSON (`value` + `Quantity`).
const PRIMITIVE_SUFFIXES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
];

fn choice_type(suffix: &str) -> Option<String> {
    let first = suffix.chars().next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let lowered = first.to_ascii_lowercase().to_string() + &suffix[1..];
    if PRIMITIVE_SUFFIXES.contains(&lowered.as_str()) {
        Some(lowered)
    } else {
        Some(suffix.to_owned())
    }
}

fn push_json<'a>(out: &mut Vec<Node<'a>>, value: &'a Value, ty: Option<String>) {
    match value {
        Value::Array(items) => out.extend(items.iter().map(|v| Node::Json(v, ty.clone()))),
        Value::Null => {}
        v => out.push(Node::Json(v, ty)),
    }
}

fn member<'a>(node: &Node<'a>, name: &str, out: &mut Vec<Node<'a>>) {
    let Node::Json(Value::Object(obj), _) = node else {
        return;
    };
    if let Some(v) = obj.get(name) {
        push_json(out, v, None);
        return;
    }
    // A choice element: `value` finds `valueQuantity`, typed Quantity.
    for (key, v) in obj {
        if let Some(suffix) = key.strip_prefix(name)
            && let Some(ty) = choice_type(suffix)
        {
            push_json(out, v, Some(ty));
        }
    }
}

/// The type a Reference points at: `Patient/1`, `http://x/fhir/Patient/1`, or `type`.
pub fn reference_type(reference: &Value) -> Option<String> {
    if let Some(t) = reference.get("type").and_then(Value::as_str) {
        return Some(t.to_owned());
    }
    let r = reference.get("reference").and_then(Value::as_str)?;
    let r = r.split("/_history/").next().unwrap_or(r);
    let mut parts = r.rsplit('/');
    let _id = parts.next()?;
    let ty = parts.next()?;
    ty.chars()
        .next()
        .filter(char::is_ascii_uppercase)
        .map(|_| ty.to_owned())
}

fn truthy(nodes: &[Node]) -> bool {
    matches!(nodes, [Node::Bool(true)])
}

fn equal(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Json(Value::String(x), _), Node::Str(y))
        | (Node::Str(y), Node::Json(Value::String(x), _)) => x == y,
        (Node::Json(Value::Bool(x), _), Node::Bool(y))
        | (Node::Bool(y), Node::Json(Value::Bool(x), _)) => x == y,
        (Node::Str(x), Node::Str(y)) => x == y,
        (Node::Bool(x), Node::Bool(y)) => x == y,
        (Node::Int(x), Node::Int(y)) => x == y,
        (Node::Json(x, _), Node::Json(y, _)) => x == y,
        _ => false,
    }
}

/// Evaluate `expr` with `context` as the input collection (the resource, or `$this`).
pub fn evaluate<'a>(expr: &Expr, context: &[Node<'a>]) -> Vec<Node<'a>> {
    match expr {
        Expr::Union(parts) => {
            let mut out: Vec<Node<'a>> = Vec::new();
            for p in parts {
                for n in evaluate(p, context) {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
            out
        }
        Expr::And(a, b) => {
            let (a, b) = (evaluate(a, context), evaluate(b, context));
            vec![Node::Bool(truthy(&a) && truthy(&b))]
        }
        Expr::Equals {
            left,
            right,
            negated,
        } => {
            let (l, r) = (evaluate(left, context), evaluate(right, context));
            match (l.as_slice(), r.as_slice()) {
                ([a], [b]) => vec![Node::Bool(equal(a, b) != *negated)],
                _ => Vec::new(),
            }
        }
        Expr::As(e, ty) => evaluate(e, context)
            .into_iter()
            .filter(|n| n.is_type(ty))
            .collect(),
        Expr::Is(e, ty) => match evaluate(e, context).as_slice() {
            [n] => vec![Node::Bool(n.is_type(ty))],
            _ => Vec::new(),
        },
        Expr::Path(primary, steps) => {
            let mut current = match primary.as_ref() {
                Primary::Group(e) => evaluate(e, context),
                Primary::Str(s) => vec![Node::Str(s.clone())],
                Primary::Bool(b) => vec![Node::Bool(*b)],
                Primary::Int(n) => vec![Node::Int(*n)],
                Primary::Call(f) => call(f, context.to_vec()),
                Primary::Identifier(name) => {
                    // The context's own type name selects the context (`Patient.name`).
                    let own: Vec<Node<'a>> = context
                        .iter()
                        .filter(|n| n.type_name() == Some(name))
                        .cloned()
                        .collect();
                    if !own.is_empty() && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        own
                    } else {
                        let mut out = Vec::new();
                        for n in context {
                            member(n, name, &mut out);
                        }
                        out
                    }
                }
            };
            for step in steps {
                current = match step {
                    Step::Member(name) => {
                        let mut out = Vec::new();
                        for n in &current {
                            member(n, name, &mut out);
                        }
                        out
                    }
                    Step::Call(f) => call(f, current),
                    Step::Index(i) => current.into_iter().nth(*i).into_iter().collect(),
                };
            }
            current
        }
    }
}

fn call<'a>(f: &Function, input: Vec<Node<'a>>) -> Vec<Node<'a>> {
    match f {
        Function::Where(cond) => input
            .into_iter()
            .filter(|n| truthy(&evaluate(cond, std::slice::from_ref(n))))
            .collect(),
        Function::As(ty) | Function::OfType(ty) => {
            input.into_iter().filter(|n| n.is_type(ty)).collect()
        }
        Function::Is(ty) => match input.as_slice() {
            [n] => vec![Node::Bool(n.is_type(ty))],
            _ => Vec::new(),
        },
        Function::Exists => vec![Node::Bool(!input.is_empty())],
        Function::First => input.into_iter().take(1).collect(),
        Function::Resolve => input
            .iter()
            .filter_map(|n| match n {
                Node::Json(v, _) => reference_type(v).map(Node::Resolved),
                _ => None,
            })
            .collect(),
        Function::Extension(url) => {
            let mut out = Vec::new();
            for n in &input {
                let mut exts = Vec::new();
                member(n, "extension", &mut exts);
                out.extend(exts.into_iter().filter(|e| matches!(e, Node::Json(v, _) if v.get("url").and_then(Value::as_str) == Some(url))));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval<'a>(src: &str, resource: &'a Value) -> Vec<Node<'a>> {
        let expr = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        evaluate(&expr, &[Node::Json(resource, None)])
    }

    #[test]
    fn paths_choices_and_where() {
        let obs = json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": 5},
            "effectivePeriod": {"start": "2024-01-01"},
            "component": [{"code": {"text": "a"}}, {"code": {"text": "b"}}]});
        assert_eq!(
            eval("Observation.subject.where(resolve() is Patient)", &obs).len(),
            1
        );
        assert_eq!(
            eval("Observation.subject.where(resolve() is Group)", &obs).len(),
            0
        );
        assert_eq!(eval("(Observation.value as Quantity)", &obs).len(), 1);
        assert_eq!(eval("Observation.value.as(CodeableConcept)", &obs).len(), 0);
        assert_eq!(
            eval("Observation.effective", &obs),
            vec![Node::Json(&obs["effectivePeriod"], Some("Period".into()))]
        );
        assert_eq!(eval("Observation.component.code", &obs).len(), 2);
        assert_eq!(
            eval(
                "Observation.component.code | Observation.component.code",
                &obs
            )
            .len(),
            2,
            "union deduplicates"
        );
        assert_eq!(
            eval("(Observation.value as Quantity).value", &obs),
            vec![Node::Json(&obs["valueQuantity"]["value"], None)]
        );
    }

    #[test]
    fn booleans_and_extensions() {
        let p = json!({"resourceType": "Patient", "deceasedBoolean": false,
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
            "extension": [{"url": "http://x/race", "extension": [{"url": "ombCategory", "valueCoding": {"code": "2106-3"}}]}]});
        assert_eq!(
            eval(
                "Patient.deceased.exists() and Patient.deceased != false",
                &p
            ),
            vec![Node::Bool(false)]
        );
        let alive = json!({"resourceType": "Patient"});
        assert_eq!(
            eval(
                "Patient.deceased.exists() and Patient.deceased != false",
                &alive
            ),
            vec![Node::Bool(false)]
        );
        let dead = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
        assert_eq!(
            eval(
                "Patient.deceased.exists() and Patient.deceased != false",
                &dead
            ),
            vec![Node::Bool(true)]
        );
        assert_eq!(eval("Patient.telecom.where(system='email')", &p).len(), 1);
        let codes = eval(
            "Patient.extension.where(url = 'http://x/race').extension.value.code",
            &p,
        );
        assert_eq!(
            codes,
            vec![Node::Json(
                &p["extension"][0]["extension"][0]["valueCoding"]["code"],
                None
            )]
        );
        assert_eq!(eval("Patient.extension('http://x/race')", &p).len(), 1);
    }

    #[test]
    fn every_registry_expression_parses() {
        let registry: Value =
            serde_json::from_str(include_str!("../../profiles/search/parameters.json"))
                .expect("json");
        let mut count = 0;
        for p in registry["parameters"].as_array().expect("parameters") {
            let mut exprs = vec![p["expression"].as_str().unwrap_or_default().to_owned()];
            for c in p["components"].as_array().into_iter().flatten() {
                exprs.push(c["expression"].as_str().unwrap_or_default().to_owned());
            }
            for e in exprs.iter().filter(|e| !e.is_empty()) {
                parse(e).unwrap_or_else(|err| panic!("{e}: {err}"));
                count += 1;
            }
        }
        assert!(count > 700, "{count}");
    }

    #[test]
    fn parse_errors_have_offsets() {
        assert!(parse("Patient.name.where(").is_err());
        assert!(parse("Patient.name.frobnicate()").is_err());
        assert_eq!(parse("Patient..name").err().map(|e| e.offset), Some(8));
    }
}
