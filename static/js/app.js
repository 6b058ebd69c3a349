/* Tradebaas page glue: settings dialog, live-socket banner, chart (lightweight-charts). */
(function () {
  "use strict";
  const tb = (window.tb = window.tb || {});

  tb.openSettings = function (tab) {
    const dialog = document.getElementById("settings-dialog");
    dialog.showModal();
    const button = document.getElementById("tab-" + (tab || "broker"));
    if (button) button.click();
  };

  document.addEventListener("click", function (event) {
    const tab = event.target.closest(".tab");
    if (!tab) return;
    tab.parentElement.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  });

  // ---- live socket state --------------------------------------------------------------------
  function banner(show) {
    const el = document.getElementById("live-banner");
    if (el) el.classList.toggle("hidden", !show);
    document.body.dataset.live = show ? "down" : "up";
  }
  document.addEventListener("htmx:wsOpen", () => banner(false));
  document.addEventListener("htmx:wsClose", () => banner(true));
  document.addEventListener("htmx:wsError", () => banner(true));

  // ---- error dialog opens by itself when the run enters ERROR --------------------------------
  let shownError = null;
  function maybeOpenError() {
    const dialog = document.getElementById("error-dialog");
    if (!dialog) return;
    const message = document.getElementById("error-message");
    const state = document.getElementById("run-state");
    const key = message ? message.textContent : null;
    if (state && state.dataset.state === "ERROR" && key && key !== shownError && !dialog.open) {
      shownError = key;
      dialog.showModal();
    }
  }

  // ---- chart ---------------------------------------------------------------------------------
  let chart = null, series = null, priceLines = [];
  function initChart() {
    const el = document.getElementById("chart");
    if (!el || !window.LightweightCharts || chart) return;
    chart = LightweightCharts.createChart(el, {
      height: 320,
      layout: { background: { color: "#121821" }, textColor: "#8b98a5" },
      grid: { vertLines: { color: "#1b2430" }, horzLines: { color: "#1b2430" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    series = chart.addCandlestickSeries();
    new ResizeObserver(() => chart.applyOptions({ width: el.clientWidth })).observe(el);
    loadCandles(el.dataset.instrument);
  }
  function loadCandles(instrument) {
    const el = document.getElementById("chart");
    if (!el || !instrument) return;
    fetch(el.dataset.url + "?instrument=" + encodeURIComponent(instrument), { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : { candles: [] }))
      .then((data) => {
        series.setData(data.candles || []);
        document.body.dataset.chartCandles = String((data.candles || []).length);
        applyLevels();
      });
  }
  function applyLevels() {
    const tpl = document.getElementById("chart-levels");
    if (!tpl || !series) return;
    priceLines.forEach((line) => series.removePriceLine(line));
    priceLines = [];
    const add = (value, title, color) => {
      if (value) priceLines.push(series.createPriceLine({ price: parseFloat(value), color, lineWidth: 1, title }));
    };
    add(tpl.dataset.entry, "entry", "#3b82f6");
    add(tpl.dataset.stop, "stop", "#ef4444");
    add(tpl.dataset.target, "target", "#22c55e");
    try { series.setMarkers(JSON.parse(tpl.dataset.markers || "[]")); } catch (e) { /* no markers */ }
    const el = document.getElementById("chart");
    if (el && tpl.dataset.instrument && tpl.dataset.instrument !== el.dataset.instrument) {
      el.dataset.instrument = tpl.dataset.instrument;
      document.getElementById("chart-instrument").textContent = tpl.dataset.instrument;
      loadCandles(tpl.dataset.instrument);
    }
  }
  function applyCandle() {
    const tpl = document.getElementById("chart-candle");
    const el = document.getElementById("chart");
    if (!tpl || !series || !el) return;
    if (tpl.dataset.instrument !== el.dataset.instrument) return;
    try { series.update(JSON.parse(tpl.dataset.candle)); } catch (e) { /* ignore a bad candle */ }
  }

  function equityChart() {
    const el = document.getElementById("equity-chart");
    if (!el || !window.LightweightCharts) return;
    const points = JSON.parse(el.dataset.points || "[]");
    const c = LightweightCharts.createChart(el, {
      height: 260, layout: { background: { color: "#121821" }, textColor: "#8b98a5" },
      grid: { vertLines: { color: "#1b2430" }, horzLines: { color: "#1b2430" } },
    });
    c.addLineSeries({ color: "#3b82f6" }).setData(points);
    new ResizeObserver(() => c.applyOptions({ width: el.clientWidth })).observe(el);
  }

  document.addEventListener("htmx:oobAfterSwap", function (event) {
    const id = event.detail.target && event.detail.target.id;
    if (id === "chart-levels") applyLevels();
    if (id === "chart-candle") applyCandle();
    if (id === "error-dialog" || id === "error-details") maybeOpenError();
  });
  document.addEventListener("htmx:afterSettle", maybeOpenError);
  window.addEventListener("DOMContentLoaded", function () {
    initChart();
    equityChart();
    maybeOpenError();
  });
})();
