(function () {
  "use strict";
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var body = table.tBodies[0];
    table.querySelectorAll("th button").forEach(function (button) {
      var ascending = false;
      button.addEventListener("click", function () {
        var col = Number(button.dataset.col);
        var numeric = button.dataset.type === "num";
        ascending = !ascending;
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
          if (numeric && (x === "" || y === "")) return (x === "") - (y === "");  // no value: last either way
          var d = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
          return ascending ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
        table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
        button.parentNode.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      });
    });
  });
})();
