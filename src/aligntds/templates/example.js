(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tds-data").textContent);
  var CLASSES = ["unshifted", "marginal", "shifted"];

  function tokenText(id) {
    var s = Object.prototype.hasOwnProperty.call(data.tokens, id) ? data.tokens[id] : "<" + id + ">";
    return s;
  }
  function visible(s) {  // whitespace marks as the report's (data.marks), data.empty for an empty token
    var out = "";
    for (var i = 0; i < s.length; i++) {
      out += Object.prototype.hasOwnProperty.call(data.marks, s[i]) ? data.marks[s[i]] : s[i];
    }
    return out || data.empty;
  }
  function pct(p) {
    if (p === null) return "?";
    if (p > 0 && p < 1e-5) return (100 * p).toExponential(1) + "%";
    return (100 * p).toFixed(p < 0.001 ? 3 : 2) + "%";
  }
  function ppm(x) {
    return x / 1e6;
  }
  function nats(x) {
    return x === null || x === undefined ? "unknown" : x.toFixed(3) + " nats";
  }
  function num(x) {
    return x === null || x === undefined ? "-" : x.toFixed(4);
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function prefixOf(prompt, boundary, t) {  // the prompt and the answer text before position t, as that model read it
    return prompt + (t > 0 ? boundary : "") + data.spans.slice(0, t).join("");
  }

  function show(t) {
    var content = document.getElementById("content");
    var alignedTop = data.aligned_topk_ids[t][0];
    var rank = data.aligned_rank[t];
    var head = el("p", "position");
    head.appendChild(el("b", null, "Position " + t + ": "));
    head.appendChild(el("span", "c" + data.cls[t], visible(tokenText(data.response_ids[t]))));
    head.appendChild(document.createTextNode(
      " \u2014 " + (CLASSES[data.cls[t]] || "not classed (a token only the aligned vocabulary has)") + "; the aligned top-1 token has base rank " +
      (rank < 0 ? "> " + data.base_topk_ids[t].length : String(rank + 1)) + " (1 = top) and base probability " + pct(data.base_prob[t]) +
      (data.greedy_mismatch[t] ? "; the answer token here is not the aligned model's top-1" : "") +
      (data.spike[t] ? "; a KL spike" : "")));

    var table = el("table", "dist");
    var hr = document.createElement("tr");
    hr.appendChild(el("th", "num", "#"));
    hr.appendChild(el("th", "base", "Base@" + t));
    hr.appendChild(el("th", "num base", "p"));
    hr.appendChild(el("th", null, "Aligned@" + t));
    hr.appendChild(el("th", "num", "p"));
    table.appendChild(hr);
    for (var i = 0; i < data.aligned_topk_ids[t].length; i++) {
      var tr = document.createElement("tr");
      tr.appendChild(el("td", "num", String(i + 1)));
      var b = el("td", "base-token");
      var bid = data.base_topk_ids[t][i];
      var bspan = el("span", bid === alignedTop ? "mark" : null, visible(tokenText(bid)));
      b.appendChild(bspan);
      tr.appendChild(b);
      tr.appendChild(el("td", "num", pct(ppm(data.base_topk_ppm[t][i]))));
      var a = el("td", "aligned-token");
      a.appendChild(el(i === 0 ? "b" : "span", null, visible(tokenText(data.aligned_topk_ids[t][i]))));
      tr.appendChild(a);
      tr.appendChild(el("td", "num", pct(ppm(data.aligned_topk_ppm[t][i]))));
      table.appendChild(tr);
    }
    var er = el("tr", "entropy");
    er.appendChild(el("th", "num", "H"));
    er.appendChild(el("td", "base-entropy", "entropy " + nats(data.base_entropy[t])));
    er.lastChild.colSpan = 2;
    er.appendChild(el("td", "aligned-entropy", "entropy " + nats(data.aligned_entropy[t])));
    er.lastChild.colSpan = 2;
    table.appendChild(er);

    var metrics = el("div", "metrics");
    var k = "@" + data.k + ": ";
    var text = "KL" + k + num(data.kl[t]) + "  |  Jaccard" + k + num(data.jaccard[t]) + "  |  WS" + k + num(data.ws[t]);
    Object.keys(data.exact).forEach(function (k) { text += "  |  " + k + " (exact): " + num(data.exact[k][t]); });
    metrics.textContent = text;

    var base = el("div", "prefix base");
    base.appendChild(el("b", null, "Base prefix:"));
    base.appendChild(el("span", "text", prefixOf(data.base_prompt, data.base_boundary, t)));
    var aligned = el("div", "prefix aligned");
    aligned.appendChild(el("b", null, "Aligned prefix:"));
    aligned.appendChild(el("span", "text", prefixOf(data.aligned_prompt, data.aligned_boundary, t)));

    content.replaceChildren(head, table, metrics, base, aligned);
    document.querySelectorAll("#answer .tok.sel").forEach(function (s) { s.classList.remove("sel"); });
    document.querySelector('#answer .tok[data-t="' + t + '"]').classList.add("sel");
  }

  document.querySelectorAll("#answer .tok").forEach(function (span) {
    var t = Number(span.dataset.t);
    span.addEventListener("click", function (e) { e.preventDefault(); show(t); });
    span.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); show(t); }
    });
  });
})();
