// The Send SMS page's live counter: characters, encoding and SMS parts, counted the way the
// server counts them (messaging/encoding.py; the alphabet and sizes come from the page).
(function () {
  "use strict";
  function count(text, alphabet) {
    var basic = new Set(alphabet.basic), extended = new Set(alphabet.extended);
    var chars = Array.from(text); // code points: an emoji is one character here
    var gsm = chars.every(function (c) { return basic.has(c) || extended.has(c); });
    var sizes = chars.map(function (c) {
      if (gsm) { return extended.has(c) ? 2 : 1; }
      return c.codePointAt(0) > 0xffff ? 2 : 1; // UTF-16: two units outside the BMP
    });
    var limits = gsm ? alphabet.gsm : alphabet.ucs2;
    var units = sizes.reduce(function (a, b) { return a + b; }, 0);
    var parts = 1;
    if (units > limits[0]) { // a part never splits an escape or a surrogate pair
      var used = 0;
      sizes.forEach(function (size) {
        if (used + size > limits[1]) { parts += 1; used = 0; }
        used += size;
      });
    }
    return { characters: chars.length, units: units, encoding: gsm ? "GSM-7" : "UCS-2",
             parts: text.length ? parts : 0 };
  }
  function start() {
    var data = document.getElementById("sms-alphabet");
    var body = document.querySelector("#send-sms textarea.sms-body");
    var out = document.querySelector("#send-sms .sms-counter");
    if (!data || !body || !out) { return; }
    var alphabet = JSON.parse(data.textContent);
    function show() {
      var c = count(body.value, alphabet);
      out.textContent = c.characters + " characters, " + c.encoding + ", " + c.parts +
        (c.parts === 1 ? " SMS" : " SMS parts");
    }
    body.addEventListener("input", show);
    show();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
