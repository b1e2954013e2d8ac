// The demo's head script (classic, right after cloak.js): hide the headline before the first
// paint, with the timeout from the URL (?timeout=ms). A shop writes the one-line
// <script src="/centric-cloak.js" data-slots="#headline" data-timeout="300"></script> instead.
window.centricCloak.hide('#headline', Number(new URLSearchParams(location.search).get('timeout')) || 300);
