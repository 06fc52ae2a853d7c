// matchstream page
