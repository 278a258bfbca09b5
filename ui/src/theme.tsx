/**
 * Light and dark themes. "system" (the default) follows the operating system through CSS media queries;
 * a choice of light or dark is remembered in localStorage and applied before first paint by /theme.js.
 */
import { useState } from "preact/hooks";
import { AutoIcon, MoonIcon, SunIcon } from "./icons.tsx";

export type ThemeChoice = "system" | "light" | "dark";
const KEY = "berth.theme";
const ORDER: ThemeChoice[] = ["system", "light", "dark"];

export function storedTheme(): ThemeChoice {
  try {
    const v = window.localStorage.getItem(KEY);
    return v === "light" || v === "dark" ? v : "system";
  } catch {
    return "system";
  }
}

export function applyTheme(choice: ThemeChoice): void {
  const root = document.documentElement;
  if (choice === "system") root.removeAttribute("data-theme");
  else root.setAttribute("data-theme", choice);
  try {
    if (choice === "system") window.localStorage.removeItem(KEY);
    else window.localStorage.setItem(KEY, choice);
  } catch {
    // storage may be disabled; the choice then lasts for this page only
  }
}

const LABELS: Record<ThemeChoice, string> = {
  system: "Theme: system",
  light: "Theme: light",
  dark: "Theme: dark",
};
const ICONS = { system: AutoIcon, light: SunIcon, dark: MoonIcon };

export function ThemeToggle() {
  const [choice, setChoice] = useState<ThemeChoice>(storedTheme);
  const Icon = ICONS[choice];
  const next = ORDER[(ORDER.indexOf(choice) + 1) % ORDER.length]!;
  return (
    <button
      type="button"
      class="theme-toggle"
      onClick={() => {
        applyTheme(next);
        setChoice(next);
      }}
      title={`${LABELS[choice]} (switch to ${next})`}
      aria-label={`${LABELS[choice]}. Switch to ${next}.`}
      data-theme-choice={choice}
    >
      <Icon />
    </button>
  );
}
