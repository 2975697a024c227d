/* Stand-in for static.klaviyo.com/onsite/js/klaviyo.js in tests: it records the calls
 * queued in window._klOnsite (as klaviyo.js drains them) and made afterwards, and the
 * company_id it was loaded with, in window.__klaviyoStub. */
(function () {
  "use strict";
  var script = document.currentScript;
  var stub = {
    companyId: script ? new URL(script.src).searchParams.get("company_id") : null,
    calls: []
  };
  function record(call) {
    var args = Array.prototype.slice.call(call);
    var method = args.shift();
    var callback = typeof args[args.length - 1] === "function" ? args.pop() : null;
    stub.calls.push({ method: method, args: args });
    if (callback) callback(true);
  }
  var queued = window._klOnsite || [];
  window.__klaviyoStub = stub;
  window._klOnsite = { push: function () { Array.prototype.forEach.call(arguments, record); } };
  queued.forEach(record);
  var api = {};
  ["identify", "track", "trackViewedItem"].forEach(function (method) {
    api[method] = function () {
      record([method].concat(Array.prototype.slice.call(arguments)));
      return Promise.resolve(true);
    };
  });
  window.klaviyo = api;
})();
