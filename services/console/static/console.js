// The console's own script: draws the charts (uPlot) and keeps them current while the page
// is open. Everything else is server-rendered HTML refreshed by htmx. No inline script, no
// eval: the Content-Security-Policy forbids both.
(function () {
  "use strict";

  var PALETTE = ["#1f5fbf", "#b35900", "#00796b", "#6a1b9a", "#455a64", "#ad1457"];
  var EVENT_COLOURS = { concept: "#c62828", data: "#d84315", prediction: "#8e24aa", retrain: "#4a148c", live: "#2e7d32" };

  function zoomed(state, value) {
    // Zoomed in, new points keep the person's view; zoomed out, the chart follows the data.
    state.zoomed = value;
    state.element.dataset.zoomed = String(value);
  }

  function eventMarkers(state) {
    // Vertical lines at each event's time, drawn on top of the series.
    return {
      hooks: {
        draw: [function (u) {
          var ctx = u.ctx;
          var top = u.bbox.top, height = u.bbox.height;
          ctx.save();
          state.events.forEach(function (event) {
            var x = Math.round(u.valToPos(event.at, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) { return; }
            ctx.strokeStyle = EVENT_COLOURS[event.kind] || "#c62828";
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.setLineDash(event.kind === "retrain" ? [6, 4] : []);
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
          });
          ctx.restore();
        }],
        setCursor: [function (u) {
          // Say which event the pointer is on (within a few pixels of its line).
          var left = u.cursor.left;
          var found = null;
          if (left != null && left >= 0) {
            state.events.forEach(function (event) {
              var x = u.valToPos(event.at, "x");
              if (Math.abs(x - left) <= 5) { found = event; }
            });
          }
          var text = found ? found.label + " at " + new Date(found.at * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : state.hint;
          if (state.note && state.note.textContent !== text) { state.note.textContent = text; }
        }],
        setSelect: [function (u) { if (u.select.width > 0) { zoomed(state, true); } }]
      }
    };
  }

  function options(element, chart, state) {
    var series = [{ label: "time" }];
    chart.series.forEach(function (s, i) {
      var colour = PALETTE[i % PALETTE.length];
      series.push({ label: s.label, stroke: colour, width: 2, spanGaps: false, points: { show: true, size: 5 } });
    });
    return {
      width: Math.max(320, element.clientWidth),
      height: 300,
      series: series,
      scales: { x: { time: true } },
      axes: [{}, { label: chart.y_label }],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      plugins: [eventMarkers(state)]
    };
  }

  function fetchChart(element) {
    return fetch(element.dataset.chartSrc, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("the chart's data answered " + response.status); }
        return response.json();
      });
  }

  function drawChart(element) {
    var note = document.getElementById(element.id + "-note");
    var state = { element: element, events: [], zoomed: false, note: note, hint: note ? note.textContent : "" };
    zoomed(state, false);
    var plot = null;
    function update() {
      return fetchChart(element).then(function (chart) {
        state.events = chart.events || [];
        if (plot === null) {
          plot = new uPlot(options(element, chart, state), chart.data, element);
          plot.over.addEventListener("dblclick", function () { zoomed(state, false); });
          window.addEventListener("resize", function () {
            plot.setSize({ width: Math.max(320, element.clientWidth), height: 300 });
          });
          element.dataset.ready = "true";
        } else {
          // Keep the person's zoom while new points arrive; follow the data otherwise.
          plot.setData(chart.data, !state.zoomed);
        }
        element.dataset.points = String(chart.data[0].length);
        element.dataset.events = String(state.events.length);
      }).catch(function (error) {
        if (state.note) { state.note.textContent = "The chart could not be updated: " + error.message; }
      });
    }
    update();
    var seconds = Number(element.dataset.refresh || "5");
    window.setInterval(function () { if (!document.hidden) { update(); } }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart-src]").forEach(drawChart);
  });
})();
