/* django-klaviyo storefront: identify the logged-in user and send the browse events that
 * {% klaviyo_viewed_product %}, {% klaviyo_added_to_cart %}, {% klaviyo_started_checkout %},
 * {% klaviyo_viewed_category %} and {% klaviyo_searched_site %} embed in the page.
 * Loaded by {% klaviyo_js %}; no inline script, so a strict CSP works.
 *
 * window.djangoKlaviyo.send(body) posts one event to the browse-events endpoint, for
 * stores whose carts live in JavaScript: body is {"event": "added_to_cart", "item": {...}}
 * etc. (see docs/storefront.md). It resolves to the endpoint's JSON answer.
 *
 * Fields marked {% klaviyo_identify "email" %} (data-klaviyo-identify) identify a guest:
 * when such a field changes to a valid value, or the page is left with one, the value
 * goes to klaviyo.identify and, through the server, to the endpoint ("identify"), which
 * sends the visit's open Started Checkout on that profile.
 */
(function () {
  "use strict";

  // The same call queue klaviyo.js's own loader snippet creates: calls made before
  // klaviyo.js arrives wait in window._klOnsite and run when it loads.
  function installQueue() {
    if (window.klaviyo) return;
    window._klOnsite = window._klOnsite || [];
    window.klaviyo = new Proxy({}, {
      get: function (target, method) {
        if (method === "push") {
          return function () {
            window._klOnsite.push.apply(window._klOnsite, arguments);
          };
        }
        return function () {
          var args = Array.prototype.slice.call(arguments);
          var callback = typeof args[args.length - 1] === "function" ? args.pop() : undefined;
          return new Promise(function (resolve) {
            window._klOnsite.push([method].concat(args, [function (result) {
              if (callback) callback(result);
              resolve(result);
            }]));
          });
        };
      }
    });
  }

  function readJSON(id) {
    var element = document.getElementById(id);
    if (!element) return null;
    try {
      return JSON.parse(element.textContent);
    } catch (error) {
      console.error("django-klaviyo: #" + id + " is not JSON", error);
      return null;
    }
  }

  var config = readJSON("klaviyo-storefront-config") || {};

  function send(body, keepalive) {
    if (!config.eventsUrl) {
      return Promise.reject(new Error("django-klaviyo: the browse-events endpoint is not mounted"));
    }
    return fetch(config.eventsUrl, {
      method: "POST",
      credentials: "same-origin",
      // A shopper who types an email and leaves: the request outlives the page.
      keepalive: !!keepalive,
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRFToken": config.csrfToken || ""
      },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) {
          console.error("django-klaviyo: " + body.event + " refused (" + response.status + ")", answer);
        }
        return answer;
      });
    });
  }

  function report(embedded) {
    if (config.eventsUrl) {
      send(embedded.body).catch(function (error) {
        console.error("django-klaviyo: " + embedded.event + " not sent", error);
      });
    } else {
      window.klaviyo.track(embedded.metric, embedded.properties);
    }
  }

  function watchIdentifyFields() {
    var sent = {};
    Array.prototype.forEach.call(document.querySelectorAll("[data-klaviyo-identify]"), function (field) {
      var name = field.getAttribute("data-klaviyo-identify");
      if (name !== "email" && name !== "phone_number") return;
      function identify() {
        var value = (field.value || "").trim();
        if (!value || sent[name] === value) return;
        if (typeof field.checkValidity === "function" && !field.checkValidity()) return;
        sent[name] = value;
        var who = {};
        who[name] = value;
        window.klaviyo.identify(who);
        if (config.eventsUrl) {
          var body = { event: "identify" };
          body[name] = value;
          send(body, true).catch(function (error) {
            console.error("django-klaviyo: identify not sent", error);
          });
        }
      }
      field.addEventListener("change", identify);
      window.addEventListener("pagehide", identify);
    });
  }

  installQueue();
  window.djangoKlaviyo = { send: send };

  if (config.identify && (config.identify.email || config.identify.external_id)) {
    window.klaviyo.identify(config.identify);
  }
  var viewed = readJSON("klaviyo-viewed-product");
  if (viewed) {
    window.klaviyo.trackViewedItem(viewed.viewedItem);
    report(viewed);
  }
  [
    "klaviyo-added-to-cart",
    "klaviyo-started-checkout",
    "klaviyo-viewed-category",
    "klaviyo-searched-site"
  ].forEach(function (id) {
    var embedded = readJSON(id);
    if (embedded) report(embedded);
  });
  watchIdentifyFields();
})();
