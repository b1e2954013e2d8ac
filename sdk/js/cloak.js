/*! centric anti-flicker cloak. A CLASSIC script for <head>, before the personalised slots:
 *    <script src="/centric-cloak.js" data-slots="#headline, .promo" data-timeout="300"></script>
 *  It hides only the slots (one <style> rule: visibility:hidden) before the first paint, until
 *  the centric SDK reveals them once the decision is applied, or data-timeout ms pass. The SDK
 *  (centric.js) adopts this timer as its decide timeout: one timer for both.
 *  Without data-slots it only defines window.centricCloak.hide(selectors, timeoutMs).
 */
(function (w, d) {
  'use strict';
  function warn(message) {
    if (w.console && w.console.warn) w.console.warn('centric: ' + message);
  }
  // A selector the document's own parser accepts can stand before {...} in a style rule;
  // insertRule below then takes exactly one rule, so nothing can leak into other CSS.
  function safe(selector) {
    if (typeof selector !== 'string' || !selector.replace(/\s+/g, '') || selector.length > 1000) {
      return false;
    }
    try {
      d.querySelector(selector);
      return true;
    } catch (e) {
      return false;
    }
  }
  function hide(selectors, timeout) {
    var list = typeof selectors === 'string' ? [selectors] : [].slice.call(selectors || []);
    var listeners = [];
    var timer = null;
    var style = d.createElement('style');
    var handle = {
      selectors: [],
      state: 'hidden',
      reveal: function () { settle('revealed'); },
      onSettle: function (fn) {
        if (handle.state === 'hidden') listeners.push(fn); else fn(handle.state);
      }
    };
    function settle(state) {
      if (handle.state !== 'hidden') return;
      handle.state = state;
      if (timer !== null) clearTimeout(timer);
      if (style.parentNode) style.parentNode.removeChild(style);
      var fns = listeners.splice(0, listeners.length);
      for (var j = 0; j < fns.length; j++) {
        try { fns[j](state); } catch (e) { /* one listener never breaks the others */ }
      }
    }
    style.setAttribute('data-centric-cloak', '');
    (d.head || d.documentElement).appendChild(style);
    for (var i = 0; i < list.length; i++) {
      var sheet = style.sheet;
      var ok = safe(list[i]) && sheet;
      if (ok) {
        try {
          var at = sheet.insertRule(list[i] + '{visibility:hidden!important}', sheet.cssRules.length);
          ok = sheet.cssRules[at].style.visibility === 'hidden';
        } catch (e) {
          ok = false;
        }
      }
      if (ok) handle.selectors.push(list[i]);
      else warn('not a valid CSS selector, not hidden: ' + String(list[i]).slice(0, 80));
    }
    if (!handle.selectors.length) {
      settle('revealed');
      return handle;
    }
    timer = setTimeout(function () { settle('timeout'); }, timeout > 0 ? timeout : 300);
    api.active = handle;  // the one the SDK's first decide() waits for
    return handle;
  }
  var api = w.centricCloak && w.centricCloak.hide ? w.centricCloak
    : (w.centricCloak = { hide: hide, active: null });
  var script = d.currentScript;
  var slots = script && script.getAttribute('data-slots');
  if (slots) hide(slots, Number(script.getAttribute('data-timeout')) || 300);
})(window, document);
