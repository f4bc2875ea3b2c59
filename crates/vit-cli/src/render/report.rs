//! `report.html`: one self-contained page for a run (the recipe, the final metrics, the
//! curves, the confusion matrix, sample predictions and attention maps), every picture inlined
//! as a data URL, nothing fetched from anywhere.
//!
//! A script at the end of the page records in `<body>`'s `data-images`, `data-decoded` and
//! `data-errors` attributes how many pictures the browser decoded and which script errors it
//! met, so that a headless browser's DOM dump tells whether the page rendered.

use base64::Engine;
use vit_train::{EpochRecord, TrainReport};

/// A picture of the report, already encoded as PNG.
pub struct Figure {
    /// The section heading.
    pub title: String,
    /// A line under the heading: what the picture shows.
    pub caption: String,
    /// PNG bytes.
    pub png: Vec<u8>,
}

/// Everything on the page.
pub struct ReportContent<'a> {
    /// The run's name (its recipe's).
    pub name: &'a str,
    /// The recipe as the run saved it.
    pub recipe_toml: &'a str,
    /// One record per epoch.
    pub history: &'a [EpochRecord],
    /// The final report, when the run finished.
    pub summary: Option<&'a TrainReport>,
    /// Per-class test accuracy, with class names, when known.
    pub per_class: Vec<(String, f64)>,
    /// The pictures, in page order.
    pub figures: Vec<Figure>,
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure of merit as the page shows it: a NaN (an empty or broken evaluation) says so.
fn number(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{v:.digits$}") } else { "not a number (nothing valid was measured)".into() }
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}\
img{max-width:100%;border:1px solid #eee}.cap{color:#555;font-size:.9em}.metrics td{font-size:1.05em}";

const CHECK: &str = "<script>\
window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message||e.type))},true);\
window.addEventListener('load',function(){var imgs=document.images,ok=0;\
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}\
document.body.setAttribute('data-images',imgs.length);document.body.setAttribute('data-decoded',ok);\
document.body.setAttribute('data-errors',window.__errors.join(' | ')||'none');});</script>";

/// The page.
pub fn render(content: &ReportContent) -> String {
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(&format!("<title>vit run: {}</title><style>{STYLE}</style>", escape(content.name)));
    // The check's listeners go in first, so that they see every later error.
    html.push_str(CHECK);
    html.push_str("</head><body>\n");
    html.push_str(&format!("<h1>Run <code>{}</code></h1>\n", escape(content.name)));
    html.push_str("<h2>Result</h2>\n");
    match content.summary {
        Some(s) => {
            html.push_str("<table class=\"metrics\">");
            let rows = [
                ("test top-1", number(s.test_top1, 4)),
                ("test top-5", number(s.test_top5, 4)),
                ("test loss", number(s.test_loss, 4)),
                ("test images", s.test_images.to_string()),
                ("model tested", s.model_selection.clone()),
                ("wall time", format!("{:.1} s", s.wall_seconds)),
                ("training throughput", format!("{:.0} images/s", s.images_per_second)),
            ];
            for (k, v) in rows {
                html.push_str(&format!("<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>", k, escape(&v)));
            }
            html.push_str("</table>\n");
        }
        None => html.push_str("<p>The run has not finished: no test result yet.</p>\n"),
    }
    let engine = base64::engine::general_purpose::STANDARD;
    for figure in &content.figures {
        html.push_str(&format!(
            "<h2>{}</h2>\n<p class=\"cap\">{}</p>\n<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n",
            escape(&figure.title),
            escape(&figure.caption),
            escape(&figure.title),
            engine.encode(&figure.png)
        ));
    }
    if !content.history.is_empty() {
        html.push_str(
            "<h2>Epochs</h2>\n<table><tr><th>epoch</th><th>step</th><th>train loss</th><th>train top-1</th>\
            <th>val loss</th><th>val top-1</th><th>val top-5</th><th>learning rate</th><th>images/s</th></tr>",
        );
        let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| number(v, 4));
        for r in content.history {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2e}</td><td>{:.0}</td></tr>",
                r.epoch,
                r.step,
                number(r.train_loss, 4),
                number(r.train_top1, 4),
                opt(r.val_loss),
                opt(r.val_top1),
                opt(r.val_top5),
                r.learning_rate,
                r.images_per_second
            ));
        }
        html.push_str("</table>\n");
    }
    if !content.per_class.is_empty() {
        html.push_str("<h2>Per-class test accuracy</h2>\n<table><tr><th class=\"l\">class</th><th>top-1</th></tr>");
        for (name, acc) in &content.per_class {
            html.push_str(&format!("<tr><td class=\"l\">{}</td><td>{}</td></tr>", escape(name), number(*acc, 4)));
        }
        html.push_str("</table>\n");
    }
    html.push_str(&format!("<h2>Recipe</h2>\n<pre>{}</pre>\n", escape(content.recipe_toml)));
    html.push_str(
        "<p class=\"cap\">Written by <code>vit report</code>; every picture is inlined, nothing is fetched.</p>\n",
    );
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_text_inlines_pictures_and_says_nan() {
        let summary = TrainReport {
            model_selection: "best <val>".into(),
            best_epoch: Some(1),
            best_val_top1: Some(0.5),
            test_loss: f64::NAN,
            test_top1: 0.25,
            test_top5: 1.0,
            test_images: 4,
            test_confusion: vec![],
            wall_seconds: 1.0,
            images_per_second: 2.0,
            run_dir: "r".into(),
        };
        let page = render(&ReportContent {
            name: "a<b",
            recipe_toml: "name = \"x\"",
            history: &[],
            summary: Some(&summary),
            per_class: vec![("c&d".into(), 0.5)],
            figures: vec![Figure { title: "Curves".into(), caption: "c".into(), png: vec![1, 2, 3] }],
        });
        assert!(page.contains("a&lt;b") && !page.contains("a<b"));
        assert!(page.contains("best &lt;val&gt;") && page.contains("c&amp;d"));
        assert!(page.contains("src=\"data:image/png;base64,AQID\""));
        assert!(page.contains("not a number"));
        assert!(!page.contains("http"), "nothing may be fetched");
    }
}
